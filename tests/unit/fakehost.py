"""In-memory stand-ins for the kernel and the firewall, so the engine's logic runs without root.

FakeKernel has the functions of appjail.helper.kernel.netns that the engine and its
resources call, over plain dicts and sets; FakeFirewall implements
firewall.FirewallBackend; FakeTunnels, FakeOpenvpn, FakePorts and FakeConntrack
stand in for the tunnels, openvpn, hostports and traffic modules, FakePolicy for
jailpolicy. All log every change in `ops`, so tests can check order, and a
test can make any call fail with `fail_on`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

from appjail.helper.firewall.backends import Damage, Residue
from appjail.helper.firewall.rules import GUARD_CHAIN, PREFIX, ROLES, JailRules
from appjail.helper.kernel import launch
from appjail.helper.kernel.hostports import PortInUse
from appjail.helper.kernel.netns import NetnsError
from appjail.model import Publish

T = TypeVar("T")
HOST = "host"
HOST_NETNS = (0, 1)  # the fake kernel's id of the helper's own network namespace
STUCK_AT_MOST = 5.0  # s a stuck stand-in waits for its test to let it go


class Injected(OSError):
    """The failure a test asked for."""


class Recorder:
    def __init__(self, ops: list[str]) -> None:
        self.ops = ops
        self.fail_on: set[str] = set()

    def _op(self, name: str, *args: Any) -> None:
        if name in self.fail_on:
            raise Injected(f"{name} failed (injected)")
        self.ops.append(" ".join([name, *map(str, args)]))


class FakeKernel(Recorder):
    """Namespaces, links, policy rules, routing tables and sysctls, as data."""

    NetnsError = NetnsError
    JAIL_IFNAME = "eth0"
    RETIRED_PREFIX = "ajz"

    def __init__(self, ops: list[str], host_links: Iterable[str] = ("lo", "up0")) -> None:
        super().__init__(ops)
        self.namespaces: set[str] = set()
        self.links: dict[str, str | None] = {name: None for name in host_links}  # host link -> peer's netns
        self.jail_sides: set[str] = set()  # namespaces whose eth0 is configured
        self.rules: set[tuple[str | None, int, int]] = set()
        self.tables: dict[int, str] = {}
        self.sysctls: dict[str, str] = {f"net/ipv4/conf/{name}/forwarding": "0"
                                        for name in (*host_links, "default")}
        self._current = HOST
        self._retired = count()
        self.members: dict[str, list[int]] = {}  # namespace -> pids started in it
        self._ids: dict[str, int] = {}

    def state(self) -> dict:
        """Everything but sysctls, for before/after comparisons."""
        return {"namespaces": set(self.namespaces), "links": dict(self.links),
                "rules": set(self.rules), "tables": dict(self.tables)}

    @contextmanager
    def rtnl(self):
        yield None

    def run_in_namespace(self, name: str, fn: Callable[[], T]) -> T:
        previous, self._current = self._current, name
        try:
            return fn()
        finally:
            self._current = previous

    # -- namespaces and links --------------------------------------------------

    def list_namespaces(self, prefix: str) -> list[str]:
        return sorted(n for n in self.namespaces if n.startswith(prefix))

    def create_namespace(self, name: str) -> None:
        if name in self.namespaces:
            raise NetnsError(f"namespace {name} exists")
        self._op("create_namespace", name)
        self.namespaces.add(name)

    def delete_namespace(self, name: str) -> None:
        self._op("delete_namespace", name)
        self.namespaces.discard(name)
        self.jail_sides.discard(name)
        for link in [link for link, peer in self.links.items() if peer == name]:
            del self.links[link]  # a veth pair dies with either end's namespace

    def list_link_names(self) -> list[str]:
        return list(self.links)

    def link_index(self, ifname: str) -> int | None:
        if self._current == HOST:
            return 1 if ifname in self.links else None
        has_peer = ifname == self.JAIL_IFNAME and self._current in self.links.values()
        return 1 if has_peer else None

    def link_is_up(self, ifname: str) -> bool:
        return ifname in self.links

    def wait_until_gone(self, ipr, ifname: str) -> bool:
        return ifname not in self.links

    def create_veth(self, ipr, host_ifname: str, namespace: str) -> None:
        self._op("create_veth", host_ifname, namespace)
        self.links[host_ifname] = namespace

    def configure_host_end(self, ipr, ifname: str, address: str, prefixlen: int) -> None:
        self._op("configure_host_end", ifname)
        self.sysctls[f"net/ipv4/conf/{ifname}/forwarding"] = "0"

    def configure_jail_side(self, address: str, prefixlen: int, gateway: str) -> None:
        self._op("configure_jail_side", self._current)
        self.jail_sides.add(self._current)

    def retire_link(self, ipr, ifname: str) -> None:
        if ifname in self.links:
            self._op("retire_link", ifname)
            self.links[f"{self.RETIRED_PREFIX}{next(self._retired)}"] = self.links.pop(ifname)

    def delete_link(self, ipr, ifname: str) -> None:
        if ifname in self.links:
            self._op("delete_link", ifname)
            del self.links[ifname]

    def ipv4_routes(self) -> list[tuple[str, int, str]]:
        return [("198.51.100.0", 24, "up0")]

    # -- policy routing ------------------------------------------------------------

    def set_vpn_table(self, ipr, table: int, vpn_ifname: str, jail_ifname: str) -> None:
        self._op("set_vpn_table", table)
        self.tables[table] = vpn_ifname

    def route_tables(self, ipr) -> set[int]:
        return set(self.tables)

    def flush_table(self, ipr, table: int) -> None:
        self._op("flush_table", table)
        self.tables.pop(table, None)

    def add_policy_rule(self, ipr, iifname: str, table: int, priority: int) -> None:
        self._op("add_policy_rule", iifname, table)
        self.rules.add((iifname, table, priority))

    def policy_rules(self, ipr, priority: int) -> list[tuple[str | None, int]]:
        return [(iif, table) for iif, table, prio in self.rules if prio == priority]

    def delete_policy_rule(self, ipr, iifname: str | None, table: int, priority: int) -> None:
        if (iifname, table, priority) in self.rules:
            self._op("delete_policy_rule", iifname, table)
            self.rules.discard((iifname, table, priority))

    # -- sysctls -----------------------------------------------------------------

    def read_sysctl(self, key: str) -> str:
        if key not in self.sysctls:
            raise FileNotFoundError(key)
        return self.sysctls[key]

    # -- the processes in a namespace (the fake launcher's children) ----------------

    def netns_path(self, name: str) -> Path:
        return Path("/run/netns") / name

    def namespace_id(self, path: str | Path) -> tuple[int, int]:
        """The host's for /proc/self/ns/net, one of its own for each other path."""
        return HOST_NETNS if str(path) == "/proc/self/ns/net" else (0, self._ids.setdefault(str(path), len(self._ids) + 2))

    def namespace_pids(self, name: str) -> list[int]:
        return [pid for pid in self.members.get(name, []) if _alive(pid)]

    def pids_by_namespace(self, names: Iterable[str]) -> dict[str, list[int]]:
        return {name: self.namespace_pids(name) for name in names}

    def signal_namespace(self, name: str, signum: int) -> int:
        """Signals the fake launcher's children in NAME (the test's own processes, nobody else's)."""
        pids = self.namespace_pids(name)
        self._op("signal_namespace", name, signum)
        for pid in pids:
            os.kill(pid, signum)
        return len(pids)

    def write_sysctl(self, key: str, value: str) -> str:
        self._op("write_sysctl", key, value)
        self.sysctls[key] = value
        return value


class FakeFirewall(Recorder):
    """firewall.FirewallBackend over a dict of chains."""

    name = "fake"

    def __init__(self, ops: list[str]) -> None:
        super().__init__(ops)
        self.chains: dict[str, JailRules] = {}
        self.guard: tuple[str, ...] | None = None

    def install(self, rules: JailRules) -> None:
        if rules.chain in self.chains:
            raise OSError(f"chain {rules.chain} already exists")
        self._op("install", rules.chain)
        self.chains[rules.chain] = rules

    def remove(self, rules: JailRules) -> None:
        self._op("remove", rules.chain)
        self.chains.pop(rules.chain, None)

    def set_guard(self, forwarding_ifnames: Iterable[str] | None) -> None:
        self._op("set_guard", forwarding_ifnames is not None)
        self.guard = None if forwarding_ifnames is None else tuple(forwarding_ifnames)

    def sweep(self, live_owners: set[str]) -> Residue:
        gone = {chain for chain in self.chains if chain not in live_owners}
        for chain in gone:
            del self.chains[chain]
        if self.guard is not None and GUARD_CHAIN not in live_owners:
            self.guard = None
            gone.add(GUARD_CHAIN)
        return Residue(owners=gone, chains=set(gone))

    def read_counters(self, layouts: Mapping[str, Sequence[str]]) -> dict:
        return {name: {role: (0, 0) for role in ROLES} for name in layouts if PREFIX + name in self.chains}

    def read_blocked(self, name: str, now: int) -> list:
        return []

    def list_owned(self) -> tuple[set[str], set[str]]:
        owned = set(self.chains) | ({GUARD_CHAIN} if self.guard is not None else set())
        return owned, set(owned)

    def damaged(self, expected: Sequence[JailRules], guard: bool) -> Damage:
        damage = Damage({rules.chain for rules in expected if self.chains.get(rules.chain) != rules})
        if guard and self.guard is None:
            damage.owners.add(GUARD_CHAIN)
        return damage

    def flush(self) -> None:
        """What `nft flush ruleset` does to it."""
        self.chains.clear()
        self.guard = None


class FakeCoexist(Recorder):
    """coexist.Coexistence: open while jails exist."""

    def __init__(self, ops: list[str]) -> None:
        super().__init__(ops)
        self.is_open = False
        self.overridden = False

    def open(self) -> None:
        if not self.is_open:
            self._op("coexist_open")
            self.is_open = True

    def close(self) -> list[str]:
        was_open, self.is_open = self.is_open, False
        return ["openings"] if was_open else []

    def sweep(self, jails_exist: bool) -> list[str]:
        if jails_exist:
            self.open()
            return []
        return self.close()

    def check(self) -> list[str]:
        """Reopens when a test set `overridden` (another tool's drop came in)."""
        if self.is_open and self.overridden:
            self._op("coexist_reopen")
            self.overridden = False
            return ["iptables-nft: Docker, accepting aj-+ in DOCKER-USER again"]
        return []


class FakePolicy(Recorder):
    """appjail.helper.firewall.jailpolicy: each jail namespace's own policy, and the host's addresses."""

    def __init__(self, ops: list[str], kernel: FakeKernel) -> None:
        super().__init__(ops)
        self.kernel = kernel
        self.addresses = {"127.0.0.1", "198.51.100.2"}
        self.installed: dict[str, tuple[Any, frozenset[str]]] = {}

    def host_addresses(self, ipr) -> set[str]:
        return set(self.addresses)

    def install(self, namespace: str, policy: Any, host_addresses: Iterable[str]) -> None:
        if namespace not in self.kernel.namespaces:
            raise NetnsError(f"no namespace {namespace}")
        self._op("policy_install", namespace)
        self.installed[namespace] = (policy, frozenset(host_addresses))

    def read_blocked(self, namespace: str, blocked_set: str, now: int) -> list:
        return []

    def read_dropped(self, namespaces: Iterable[str]) -> dict[str, tuple[int, int]]:
        return {}

    def set_host_addresses(self, namespace: str, host_addresses: Iterable[str]) -> None:
        self._op("policy_addresses", namespace)
        self.installed[namespace] = (self.installed[namespace][0], frozenset(host_addresses))


DAEMON_PID = 4242  # what a fake tunnel daemon's pid is said to be


class FakeTunnels(Recorder):
    """appjail.helper.tunnels.wireguard over a dict: interface -> where it is, and daemons serving them."""

    def __init__(self, ops: list[str], kernel: FakeKernel) -> None:
        super().__init__(ops)
        self.kernel = kernel
        self.devices: dict[str, str] = {}  # ifname -> HOST or the namespace it was moved to
        self.daemons: set[str] = set()
        self.configured: dict[str, str] = {}  # what went down the pipe to `wg setconf`
        self.inside: dict[str, tuple] = {}  # ifname -> (addresses, routes, mtu, ipv6) set in the jail
        self.stuck: threading.Event | None = None  # removal waits for it: a daemon that ignores SIGTERM

    def state(self) -> dict:
        """Devices that still exist (a namespace's go with it) and daemons."""
        alive = {name: where for name, where in self.devices.items()
                 if where == HOST or where in self.kernel.namespaces}
        return {"devices": alive, "daemons": set(self.daemons)}

    def make(self, ipr, namespace: str, ifname: str, config) -> str:
        """As the real driver's: each step an op of its own."""
        kind = self.create(ipr, ifname)
        self.configure(ifname, config.setconf_text())
        self.place(ifname, namespace, config.addresses, config.routes(), config.mtu, config.ipv6)
        self.wait_ready(ifname, kind)
        return kind

    def place(self, ifname: str, namespace: str, addresses, routes, mtu: int, ipv6: bool) -> None:
        if self.devices.get(ifname) == HOST or ifname in self.kernel.links:  # here: made, or openvpn's
            self.move(None, ifname, namespace)
        self.kernel.run_in_namespace(namespace, lambda: self.configure_inside(ifname, addresses, routes, mtu, ipv6))

    def create(self, ipr, ifname: str) -> str:
        self._op("create_tunnel", ifname)
        self.devices[ifname] = HOST
        self.daemons.add(ifname)
        return "wireguard-go"

    def configure(self, ifname: str, setconf_text: str) -> None:
        self._op("configure_tunnel", ifname)
        self.configured[ifname] = setconf_text

    def move(self, ipr, ifname: str, namespace: str) -> None:
        self._op("move_tunnel", ifname, namespace)
        self.devices[ifname] = namespace
        self.kernel.links.pop(ifname, None)  # one openvpn made in the host

    def configure_inside(self, ifname: str, addresses, routes, mtu: int, ipv6: bool) -> None:
        self._op("configure_tunnel_inside", ifname, self.kernel._current)
        self.inside[ifname] = (tuple(map(str, addresses)), tuple(map(str, routes)), mtu, ipv6)

    def wait_ready(self, ifname: str, kind: str) -> None:
        self._op("wait_tunnel", ifname)

    def remove(self, ipr, namespace: str, ifname: str) -> None:
        if self.stuck is not None:
            self.stuck.wait(STUCK_AT_MOST)
        self._op("remove_tunnel", ifname)
        self.devices.pop(ifname, None)
        self.daemons.discard(ifname)

    def present(self, namespace: str, ifname: str) -> bool:
        return self.devices.get(ifname) == namespace and namespace in self.kernel.namespaces

    def daemon_pid(self, ifname: str) -> int | None:
        return DAEMON_PID if ifname in self.daemons else None

    def sweep(self, prefix: str, live_ifnames: Iterable[str]) -> list[str]:
        gone = sorted(name for name in self.daemons if name.startswith(prefix) and name not in set(live_ifnames))
        for name in gone:
            self.daemons.discard(name)
            self.devices.pop(name, None)
        return gone

    def status(self, namespace: str, ifname: str) -> dict:
        return {"endpoint": "", "latest_handshake": 0, "rx_bytes": 0, "tx_bytes": 0,
                "link_up": True, "state": "idle", "up": True}

    def counters(self, namespace: str, ifname: str) -> dict[str, int]:
        return {"tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0,
                "dropped_packets": 0, "dropped_bytes": 0}


class FakeOpenvpn(Recorder):
    """appjail.helper.tunnels.openvpn: daemons that connect (up()) or end (end()) when a test says so."""

    def __init__(self, ops: list[str], kernel: FakeKernel, tunnels: FakeTunnels) -> None:
        super().__init__(ops)
        self.kernel = kernel
        self.tunnels = tunnels  # where its devices are, once moved
        self.daemons: dict[str, tuple[Callable, Callable]] = {}  # ifname -> (on_up, on_change)
        self.connected_once: set[str] = set()
        self.config: dict[str, str] = {}  # what went down openvpn's stdin
        self.last_words: dict[str, str] = {}
        self.running: set[str] = set()  # daemons no helper serves (theirs died)

    def start(self, ifname: str, config_text: str, on_up: Callable, on_change: Callable) -> None:
        self._op("start_openvpn", ifname)
        self.daemons[ifname] = (on_up, on_change)
        self.config[ifname] = config_text

    def adopt(self, ifname: str, on_up: Callable, on_change: Callable) -> None:
        """An earlier helper's daemon (in `running`, by ifname) is served by this one now."""
        if ifname in self.running and ifname not in self.daemons:
            self._op("adopt_openvpn", ifname)
            self.running.discard(ifname)
            self.daemons[ifname] = (on_up, on_change)
            self.connected_once.add(ifname)

    def up(self, ifname: str, report: dict[str, str]) -> None:
        """The daemon connected: its device appears in the host, its hook reports (like its thread would)."""
        from appjail.ovpnconf import parse_up
        on_up, on_change = self.daemons[ifname]
        self.kernel.links[ifname] = None
        on_up(parse_up({**report, "dev": ifname}))
        self.connected_once.add(ifname)
        on_change()

    def end(self, ifname: str, words: str) -> None:
        _on_up, on_change = self.daemons.pop(ifname)
        self.last_words[ifname] = words
        on_change()

    def connected(self, ifname: str) -> bool:
        return ifname in self.connected_once

    def why_not(self, ifname: str) -> str:
        return self.last_words.get(ifname, "no output")

    def place(self, namespace: str, ifname: str, up) -> None:
        self.tunnels.place(ifname, namespace, up.addresses, up.routes(), up.mtu, up.ipv6)

    def helper_died(self) -> None:
        """Its daemons run on, served by nobody."""
        self.running |= set(self.daemons)
        self.daemons.clear()

    def present(self, namespace: str, ifname: str) -> bool:
        return ifname in self.daemons or ifname in self.running

    def daemon_pid(self, ifname: str) -> int | None:
        return DAEMON_PID if ifname in self.daemons else None

    def remove(self, ipr, namespace: str, ifname: str) -> None:
        self._op("remove_openvpn", ifname)
        self.daemons.pop(ifname, None)
        self.running.discard(ifname)
        self.kernel.links.pop(ifname, None)
        self.tunnels.devices.pop(ifname, None)  # a tun device goes with its daemon

    def sweep(self, prefix: str, live_ifnames: Iterable[str]) -> list[str]:
        gone = sorted(name for name in {*self.daemons, *self.running}
                      if name.startswith(prefix) and name not in set(live_ifnames))
        for name in gone:
            self.remove(None, "", name)
        return gone

    def status(self, namespace: str, ifname: str) -> dict:
        return {"state": "down", "openvpn_state": "", "connected_to": "", "connected_since": 0, "rx_bytes": 0,
                "tx_bytes": 0,
                "daemon": "running" if ifname in self.daemons else "ended", "link_up": False, "up": False}

    def counters(self, namespace: str, ifname: str) -> dict[str, int]:
        return {}


class FakePorts(Recorder):
    """appjail.helper.kernel.hostports' hold, hold_each and release over a set: (proto, port) the host's own sockets have."""

    def __init__(self, ops: list[str], host_sockets: Iterable[tuple[str, int]] = ()) -> None:
        super().__init__(ops)
        self.host_sockets = set(host_sockets)
        self.held: set[tuple[str, int]] = set()

    def hold(self, publish: Iterable[Publish]) -> list[tuple[str, int]]:
        wanted = [(entry.proto, entry.host_port) for entry in publish]
        for proto, port in wanted:
            if (proto, port) in self.host_sockets | self.held:
                raise PortInUse(f"port {port}/{proto} is already in use on the host")
        for proto, port in wanted:
            self._op("hold", f"{port}/{proto}")
            self.held.add((proto, port))
        return wanted

    def hold_each(self, publish: Iterable[Publish]) -> tuple[list[tuple[str, int]], list[tuple[Publish, str]]]:
        held, lost = [], []
        for entry in publish:
            try:
                held += self.hold([entry])
            except PortInUse as exc:
                lost.append((entry, str(exc)))
        return held, lost

    def release(self, held: Iterable[tuple[str, int]]) -> None:
        for proto, port in held:
            self._op("release", f"{port}/{proto}")
            self.held.discard((proto, port))


class FakeConntrack(Recorder):
    """appjail.helper.firewall.traffic's forget_connections_soon over a set of the addresses that have connections."""

    def __init__(self, ops: list[str]) -> None:
        super().__init__(ops)
        self.addresses: set[str] = set()

    def forget_connections_soon(self, jail_address: str) -> None:
        self._op("forget_connections", jail_address)
        self.addresses.discard(jail_address)

    def connections(self, jail_address: str) -> tuple[list[dict], bool]:
        return ([{"dst": "192.0.2.80"}] if jail_address in self.addresses else []), False


def _alive(pid: int) -> bool:
    """Not yet reaped (the helper's main loop reaps the launcher's children)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class FakeLauncher(Recorder):
    """appjail.helper.kernel.launch's start over a forked child that does not exec.

    The child waits at its gate like the real one; opened, it reports what
    `report` says (b"": it "exec'd"), then ends with `exit_code`, or runs
    until signalled when `exit_code` is None. Its pid counts as a member of
    the jail's namespace in the fake kernel.
    """

    def __init__(self, ops: list[str], kernel: FakeKernel) -> None:
        super().__init__(ops)
        self.kernel = kernel
        self.report = b""
        self.exit_code: int | None = 0
        self.started: list[tuple[int, list[bytes]]] = []

    def start(self, request: launch.LaunchRequest, caller: launch.Identity) -> launch.Started:
        self._op("launch", caller.uid, *(arg.decode() for arg in request.argv))
        report_read, report_write = os.pipe()
        gate_read, gate_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child: nothing but system calls, then _exit
            code = 125
            try:
                low, high = sorted((report_write, gate_read))  # nothing else of the helper's, as launch does
                os.closerange(3, low)
                os.closerange(low + 1, high)
                os.closerange(high + 1, 65536)
                if os.read(gate_read, 1):
                    os.write(report_write, self.report)
                    os.close(report_write)
                    if self.exit_code is None:  # runs until a signal ends it
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        while True:
                            signal.pause()
                    code = self.exit_code
            finally:
                os._exit(code)
        os.close(report_write)
        os.close(gate_read)
        namespace = Path(request.netns_path).name
        self.kernel.members.setdefault(namespace, []).append(pid)
        self.started.append((pid, list(request.argv)))
        return launch.Started(pid, report_read, gate_write)

    def open_gate(self, gate_fd: int) -> None:
        launch.open_gate(gate_fd)

