"""The jail engine: spec in, working namespace out, and back to nothing.

Jails are per owner: two users may each have a jail `web`, so the registry
keys them by (owner uid, name). What the kernel sees needs names that are
unique on the machine and at most 15 characters: a jail's kernel name (its
namespace, veth or tunnel, firewall chain and tags, /etc/netns directory)
is `aj-NAME` when that is free, else `aj-` + 7 characters of the name + `-`
+ 4 hex digits; it is recorded, and everything uses the recorded one.

A jail is the resources of its kind (`resources.KINDS`: a NAT jail, or a
tunnel jail with its own WireGuard or OpenVPN interface), each described once with
its undo and its leftovers: creation makes them in order and undoes the made
ones if one fails, teardown undoes them all in reverse (the door first),
reconcile sweeps each in the same order. One lock serialises creation, teardown and reconcile;
reading the registry (find, list) takes no lock, so the helper's main loop
answers while a creation or teardown runs in a worker thread (supervisor).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from ... import linkdns
from ...model import JailSpec, ValidationError, is_address
from ...ovpnconf import OpenVpnConfig
from ...wgconf import WireGuardConfig, resolve_endpoints
from ..firewall import backends, choice, rules
from ..kernel import hostports, netns, resolv
from ..tunnels import lookups, openvpn, wireguard
from ..firewall.coexist import Coexistence, CoexistError
from ..firewall.backends import FirewallBackend
from ..firewall.forwarding import Forwarding
from ..firewall.fwwatch import FirewallWatch
from ..kernel.linkwatch import LinkWatcher
from .drivers import Drivers, machine
from .jail import Jail, JailId
from . import portforward
from .pool import DEFAULT_POOL, AddressPool, JailAddressing
from .resources import KINDS, Host, Ready, Step, nat_jails, sweep_order
from .state import READY, RUN_DIR, JailRecord, StateStore

log = logging.getLogger(__name__)
PREFIX = rules.PREFIX


class JailError(RuntimeError):
    """A jail operation failed; the message is meant for the user."""


class JailExists(JailError):
    pass


class Conflict(JailError):
    """A request disagrees with a jail, or wants what another jail or the host has."""


class JailNotFound(JailError):
    pass


class LimitReached(JailError):
    """The owner already has as many jails as one user may (see Engine.max_jails_per_user)."""


DEFAULT_MAX_JAILS_PER_USER = 32
NAMED = 10  # jails a repair's log line names


def resolve_host(host: str, port: int) -> list[str]:
    """The host's own lookup of a name (IPv4 first), in the helper's namespace."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        return []
    addresses = dict.fromkeys(str(info[4][0]) for info in sorted(infos, key=lambda i: i[0] != socket.AF_INET))
    return list(addresses)


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def note(self, kind: str, name: str) -> None:
        self.removed.append(f"{kind} {name}")


class Engine:
    """All jails of this host. Methods are thread-safe."""

    def __init__(self, run_dir: Path = RUN_DIR, pool: str = DEFAULT_POOL,
                 etc_netns: Path = resolv.ETC_NETNS,
                 upstream_sources: tuple[Path, ...] = resolv.UPSTREAM_SOURCES,
                 firewall_choice: choice.Choice | None = None,
                 coexist: Coexistence | None = None,
                 drivers: Drivers | None = None, firewall_backend: FirewallBackend | None = None,
                 kinds: dict[str, tuple[Step, ...]] = KINDS,
                 resolve: Callable[[str, int], list[str]] | None = None, forwards: portforward.Forwards | None = None,
                 max_jails_per_user: int = DEFAULT_MAX_JAILS_PER_USER,
                 connect_timeout: float = openvpn.CONNECT_TIMEOUT,
                 resolve_timeout: float = lookups.TIMEOUT,
                 link_dns: Callable[[str], linkdns.LinkDNS] = linkdns.link_dns) -> None:
        """firewall_choice: the backend to use (default: choice.choose() for this host).

        max_jails_per_user: how many jails one owner may have (create's
        `unlimited` lifts it); each holds a /30, a routing table, a namespace
        and kernel memory, so one user must not take the pool from the others.

        connect_timeout: how long a connecting jail's tunnel may take to come up
        (openvpn retries a server that does not answer forever); the caller of
        `connected` keeps the time.

        resolve_timeout: how long a WireGuard file's Endpoint names may take
        to resolve, all of them together.

        link_dns(IFACE): the servers the system has for a VPN interface (linkdns), for a
        --vpn jail without --dns.

        coexist: the host's other firewalls (default: without a bus, so no firewalld).
        drivers and firewall_backend replace the machine (default: its own, see
        drivers.machine) and resolve the host's name lookup: unit tests pass
        in-memory stand-ins.
        """
        self.max_jails_per_user = max_jails_per_user
        self.connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._jails: dict[JailId, Jail] = {}  # changed under the lock
        self._view: dict[JailId, Jail] = {}  # a copy of it, replaced whole: what find and list read
        self.store = StateStore(run_dir)
        self.firewall_choice = firewall_choice or choice.choose()
        self.firewall = firewall_backend or choice.open_backend(self.firewall_choice.name)
        drivers = drivers or machine()
        self.forwarding = Forwarding(run_dir / "forwarding.json", self.firewall, drivers.kernel)
        self.pool = AddressPool(pool)
        self.etc_netns = etc_netns
        self.upstream_sources = upstream_sources
        self.system = drivers.kernel
        self.kinds = kinds
        self.lookups = lookups.NameLookups(self._resolve_logged, resolve_timeout)
        self._resolve = resolve or resolve_host
        self._link_dns = link_dns
        self.host = Host(**vars(drivers), firewall=self.firewall, forwarding=self.forwarding, store=self.store,
                         etc_netns=etc_netns, jails=self._jails, pool=self.pool,
                         coexist=coexist or Coexistence(run_dir / "coexist.json"),
                         forwards=forwards or portforward.Forwards(run_dir / "forwarded", drivers.kernel),
                         other_firewalls=lambda: choice.other_backends(self.firewall.name),
                         tunnel_changed=self._tunnel_changed, forwarded_changed=self.forward_to)
        self._watcher: LinkWatcher | None = None
        self._firewall_watch: FirewallWatch | None = None
        self._host_addresses: set[str] | None = None  # as the jails' own policies have them
        # called (from the firewall watcher's thread) as on_lost(jail id, why) for a jail whose
        # rules could not be put back: it must be stopped (see repair)
        self.on_lost: Callable[[JailId, str], None] | None = None
        # called (from the link watcher's thread) as on_vpn_change(jail id, up)
        # whenever a VPN jail's interface goes away or comes back
        self.on_vpn_change: Callable[[JailId, bool], None] | None = None
        self._vpn_up: dict[str, bool] = {}
        # called (from a tunnel daemon's thread) as on_tunnel_change(jail id) when a
        # jail's tunnel came up or its daemon ended: see connected()
        self.on_tunnel_change: Callable[[JailId], None] | None = None

    # -- queries ---------------------------------------------------------

    def get(self, name: str, owner_uid: int | None = None) -> Jail:
        jail = self.find(name, owner_uid)
        if jail is None:
            raise JailNotFound(f"no jail named {name!r}")
        return jail

    def find(self, name: str, owner_uid: int | None = None) -> Jail | None:
        """The owner's jail of that name; owner None: the one jail of that name (tools, tests)."""
        jails = self._view
        if owner_uid is not None:
            return jails.get((owner_uid, name))
        named = [jail for jail in jails.values() if jail.name == name]
        if len(named) > 1:
            raise JailError(f"more than one user has a jail named {name!r}: say whose")
        return named[0] if named else None

    def list(self) -> list[Jail]:
        return sorted(self._view.values(), key=lambda jail: (jail.name, jail.owner_uid))

    def at_limit(self, owner_uid: int) -> bool:
        """Whether the owner has as many jails as one user may: a new one needs `unlimited`."""
        return sum(jail.owner_uid == owner_uid for jail in self._view.values()) >= self.max_jails_per_user

    def _register(self, jail: Jail) -> None:
        self._jails[jail.id] = jail
        self._view = dict(self._jails)

    def _unregister(self, jail: Jail) -> None:
        del self._jails[jail.id]
        self._view = dict(self._jails)

    # -- creation --------------------------------------------------------

    def create(self, spec: JailSpec, owner_uid: int, wireguard: WireGuardConfig | None = None,
               openvpn: OpenVpnConfig | None = None, unlimited: bool = False) -> Jail:
        """A NAT jail, or with `wireguard` or `openvpn` a tunnel jail whose only way out is that tunnel.

        Refused when the owner is at the per-user limit, unless `unlimited`.

        A WireGuard file's Endpoint names are looked up here, once, all at
        once, in the host's namespace, before anything is made and outside
        the lock (a slow name holds up no other jail); one that does not
        resolve within resolve_timeout fails the creation. `wg` only ever
        gets addresses. openvpn looks up its remotes itself, in the host's
        namespace too. An OpenVPN jail is returned `connecting`, its daemon
        started: nothing here waits for the tunnel (see connected).
        """
        if not isinstance(owner_uid, int) or isinstance(owner_uid, bool) or owner_uid < 0:
            raise ValidationError(f"invalid owner uid {owner_uid!r}")
        if wireguard is not None and openvpn is not None:
            raise ValidationError("--wireguard and --openvpn cannot be combined: a jail has one tunnel")
        tunnel = wireguard or openvpn
        if tunnel is not None and (spec.vpn or spec.publish or spec.deny or spec.no_lan):
            raise ValidationError("--vpn, --publish, --deny and --no-lan cannot be combined with "
                                  f"--{tunnel.summary()['type']}: the tunnel is the jail's only way in and out")
        if spec.forward_port and tunnel is None and not spec.vpn:
            raise ValidationError("--forward-port needs a VPN (--vpn, --wireguard or --openvpn): "
                                  "a port is forwarded by the VPN's gateway")
        if wireguard is not None:
            tunnel = self._resolved(spec.name, wireguard)
        dns = self._jail_dns(spec, tunnel)  # before the lock: it may ask the system's resolver services
        with self._lock:
            if (owner_uid, spec.name) in self._jails:
                raise JailExists(f"a jail named {spec.name!r} already exists")
            if not unlimited and self.at_limit(owner_uid):
                raise LimitReached(f"jail {spec.name!r} would be one more than the {self.max_jails_per_user} "
                                   "jails one user may have (appjail-helper --max-jails-per-user): "
                                   "stop one of yours first")
            self._check_ports(spec)
            kernel_name = self._kernel_name(spec.name, owner_uid)
            with self.system.rtnl() as ipr:
                if tunnel is None:
                    addressing = self._allocate()
                    jail = Jail(JailRecord(spec, owner_uid, addressing.slot, kernel_name=kernel_name),
                                addressing, dns, pool=str(self.pool.network))
                else:
                    jail = Jail(JailRecord(spec, owner_uid, None, tunnel=tunnel.summary(),
                                           kernel_name=kernel_name), None, dns, secret=tunnel)
                made: list[Step] = []
                try:
                    for step in self.kinds[jail.kind]:
                        step.make(self.host, ipr, jail)
                        made.append(step)
                except BaseException as exc:
                    self._undo(ipr, jail, made)
                    if isinstance(exc, hostports.PortInUse):
                        raise Conflict(str(exc)) from None
                    if isinstance(exc, (backends.FirewallError, netns.NetnsError, OSError, NetlinkError,
                                        CoexistError)):
                        raise JailError(f"could not create jail {spec.name!r}: {exc}") from exc
                    raise
                finally:
                    jail.secret = None  # the keys live on in the tunnel only
            self._register(jail)
            return jail

    def _jail_dns(self, spec: JailSpec, tunnel: WireGuardConfig | OpenVpnConfig | None) -> tuple[str, ...]:
        """--dns; else a tunnel's; else for --vpn the system's servers for that interface, never the
        host's (a router's address the VPN cannot reach, asked through it: linkdns); else the host's."""
        if spec.dns or (tunnel is not None and tunnel.dns):
            return spec.dns or tunnel.dns
        try:
            if spec.vpn:
                found = self._link_dns(spec.vpn)
                log.info("jail %s: DNS %s for %s, from %s", spec.name, ", ".join(found.servers), spec.vpn,
                         found.source)
                return found.servers
            return tuple(resolv.host_upstream_servers(self.upstream_sources))
        except (resolv.NoUpstreamDNS, linkdns.NoLinkDNS) as exc:
            raise JailError(f"jail {spec.name!r}: {exc}") from None

    def _kernel_name(self, name: str, owner_uid: int) -> str:
        """aj-NAME when no jail (ours, or another helper's namespace) has it, else a unique one.

        The other: aj- + name[:7] + - + 4 hex digits (15 characters), the
        first free one from a hash of owner and name, so a jail gets the
        same one again while nothing else changed.
        """
        taken = {jail.netns for jail in self._jails.values()} | set(self.system.list_namespaces(PREFIX))
        if PREFIX + name not in taken:
            return PREFIX + name
        start = int.from_bytes(hashlib.blake2s(f"{owner_uid}/{name}".encode(), digest_size=2).digest(), "big")
        for step in range(1 << 16):
            candidate = f"{PREFIX}{name[:7]}-{(start + step) % (1 << 16):04x}"
            if candidate not in taken:
                return candidate
        raise JailError(f"no kernel name is left for jail {name!r}")

    def _resolved(self, name: str, config: WireGuardConfig) -> WireGuardConfig:
        """The config with every Endpoint name replaced by its address, the names looked up together."""
        try:
            found = self.lookups.resolve_all([(peer.endpoint.host, peer.endpoint.port) for peer in config.peers
                                              if not is_address(peer.endpoint.host)])
        except lookups.LookupsBusy as exc:
            raise JailError(f"could not create jail {name!r}: {exc}") from None

        def lookup(host: str, port: int) -> list[str]:
            addresses = found[(host, port)]
            if addresses is None:
                raise JailError(f"could not create jail {name!r}: WireGuard Endpoint {host} did not resolve "
                                f"within {self.lookups.timeout:g} s")
            return addresses
        return resolve_endpoints(config, lookup)

    def _resolve_logged(self, host: str, port: int) -> list[str]:
        addresses = self._resolve(host, port)
        log.info("WireGuard endpoint %s resolved in the host's namespace to %s", host,
                 ", ".join(addresses) or "nothing")
        return addresses

    def _check_ports(self, spec: JailSpec) -> None:
        """Ports of other jails; the host's own are checked by holding them (resources.PublishedPorts)."""
        for publish in spec.publish:
            for other in self._jails.values():
                if any(publish.overlaps(theirs) for theirs in other.spec.publish):
                    raise Conflict(f"port {publish.host_port}/{publish.proto} is already "
                                   f"published by another jail ({other.name})")

    def _allocate(self) -> JailAddressing:
        host_routes = [ipaddress.IPv4Network(f"{dst}/{length}", strict=False)
                       for dst, length, dev in self.system.ipv4_routes()
                       if not (dev or "").startswith(PREFIX)]
        used = {jail.addressing.slot for jail in self._jails.values() if jail.addressing is not None}
        return self.pool.allocate(used, host_routes)

    def _undo(self, ipr, jail: Jail, steps: list[Step]) -> list[Exception]:
        """Undo steps in reverse, each one attempted whatever the others did."""
        errors = []
        for step in reversed(steps):
            try:
                step.undo(self.host, ipr, jail)
            except Exception as exc:
                log.exception("undoing %s of %s failed", type(step).__name__, jail.name)
                errors.append(exc)
        return errors

    # -- teardown --------------------------------------------------------

    def destroy(self, name: str, owner_uid: int | None = None) -> None:
        with self._lock:
            jail = self.get(name, owner_uid)
            self._unregister(jail)
            self._teardown(jail)

    def _teardown(self, jail: Jail) -> None:
        with self.system.rtnl() as ipr:
            errors = self._undo(ipr, jail, list(self.kinds[jail.kind]))
        if errors:
            raise JailError(f"jail {jail.name!r} was not removed completely: {errors[0]}")

    def forward_to(self, jail: Jail, port: int | None) -> None:
        """A --vpn jail's forwarded port (None: none now) DNATed to it from its VPN, in place of the
        one before (its chain is made again); from the forwarder's thread, before it tells the port."""
        if jail.tunnel is not None or jail.forwarded_port == port:
            return  # a tunnel's port reaches the jail as it is
        with self._lock:
            if self._jails.get(jail.id) is not jail:
                return  # on its way out
            before = jail.firewall_rules
            jail.forwarded_port = port
            self.firewall.remove(before)
            self.firewall.install(jail.firewall_rules)

    # -- VPN interface changes ---------------------------------------------

    def refresh_vpn_routes(self) -> None:
        """Point each VPN jail's table at its interface again, if it is up.

        Called on every link change: a recreated VPN interface gets the
        route back; a missing one leaves only the unreachable route.
        """
        changed = []
        with self._lock:
            vpn_jails = [jail for jail in self._jails.values() if jail.spec.vpn]
            for kernel_name in set(self._vpn_up) - {jail.netns for jail in vpn_jails}:
                del self._vpn_up[kernel_name]
            # every link event lands here: no netlink socket when no jail needs one
            with self.system.rtnl() if vpn_jails else nullcontext() as ipr:
                for jail in vpn_jails:
                    self.system.set_vpn_table(ipr, jail.addressing.table, jail.spec.vpn, jail.host_ifname)
                    up = self.system.link_is_up(jail.spec.vpn)
                    if self._vpn_up.setdefault(jail.netns, up) != up:
                        self._vpn_up[jail.netns] = up
                        changed.append((jail.id, up))
        for jail_id, up in changed:
            if self.on_vpn_change is not None:
                self.on_vpn_change(jail_id, up)

    def vpn_up(self, ifname: str) -> bool:
        return self.system.link_is_up(ifname)

    def tunnel_status(self, jail: Jail) -> dict:
        """A tunnel jail's tunnel: its record's description and its live state (`connecting` until it first came up)."""
        status = {**jail.tunnel, **self.host.driver(jail).status(jail.netns, jail.tunnel_ifname)}
        return {**status, "state": wireguard.CONNECTING} if jail.connecting else status

    def connected(self, jail: Jail, overdue: bool = False) -> bool:
        """Whether a connecting jail's tunnel has come up; from then on the jail is complete.

        False while its daemon still tries. JailError, with the daemon's last
        words, when it ended first, or, `overdue` (connect_timeout has passed),
        when it is still not up: the caller removes the jail then.

        Asked from the helper's main loop, it takes no lock (a teardown in a
        worker thread may hold it for seconds): it touches only this jail,
        which its caller is not creating or removing meanwhile.
        """
        if not jail.connecting:
            return True
        driver, ifname = self.host.openvpn, jail.tunnel_ifname  # the one tunnel that connects
        if driver.connected(ifname):
            jail.connecting = False
            Ready.mark(self.host, jail)
            return True
        running = driver.present(jail.netns, ifname)
        if running and not overdue:
            return False
        kind = jail.tunnel["type"]
        why = (f"{kind}'s tunnel was not up within {self.connect_timeout:g} s" if running
               else f"{kind} ended before its tunnel was up")
        raise JailError(f"could not create jail {jail.name!r}: {why}: {driver.why_not(ifname)}")

    def _tunnel_changed(self, jail: Jail) -> None:
        if self.on_tunnel_change is not None:
            self.on_tunnel_change(jail.id)

    def tunnel_running(self, jail: Jail) -> bool:
        """Whether a tunnel jail's tunnel is still there (its daemon has not ended)."""
        return self.host.driver(jail).present(jail.netns, jail.tunnel_ifname)

    def tunnel_counters(self, jail: Jail) -> dict[str, int]:
        return self.host.driver(jail).counters(jail.netns, jail.tunnel_ifname)

    def tunnel_daemon(self, jail: Jail) -> int | None:
        """The pid of the jail's tunnel daemon (None: no tunnel, or the kernel's WireGuard)."""
        return self.host.driver(jail).daemon_pid(jail.tunnel_ifname) if jail.tunnel is not None else None

    def links_changed(self) -> None:
        """A link or an address changed: VPN routes, and the host's addresses in each jail's own policy."""
        self.refresh_vpn_routes()
        self.refresh_host_addresses()

    def refresh_host_addresses(self) -> None:
        """Give every NAT jail's own policy the host's addresses, when they changed."""
        with self._lock:
            jails = nat_jails(self._jails)
            if not jails:
                self._host_addresses = None
                return
            with self.system.rtnl() as ipr:
                addresses = self.host.policy.host_addresses(ipr)
            if addresses == self._host_addresses:
                return
            for jail in jails:
                try:
                    self.host.policy.set_host_addresses(jail.netns, addresses)
                except (backends.FirewallError, OSError) as exc:  # a jail on its way out
                    log.warning("jail %s: the host's addresses were not updated: %s", jail.name, exc)
            self._host_addresses = addresses

    def start_link_watch(self) -> None:
        """Follow link and address changes, and netfilter's, from threads in the caller's namespace."""
        if self._watcher is None:
            self._watcher = LinkWatcher(self.links_changed)
            self._watcher.start()
            self.links_changed()
        if self._firewall_watch is None:
            self._firewall_watch = FirewallWatch(self.repair)
            self._firewall_watch.start()

    def close(self) -> None:
        """Stop watching links and netfilter; jails stay (destroy them first if wanted)."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._firewall_watch is not None:
            self._firewall_watch.stop()
            self._firewall_watch = None

    # -- repair --------------------------------------------------------------

    def repair(self, where: str) -> bool:
        """Put back what a host tool took of the jails' rules on the host's side; whether anything was.

        Called by the firewall watch after netfilter changed (`where`). The
        jails' promises never depended on those rules (jailpolicy): this gives
        the jails their network back. A jail whose rules cannot be made again
        is handed to on_lost, to be stopped.
        """
        changed, lost = self._repair(where)
        for jail, why in lost:
            log.error("jail %s: its rules could not be put back (%s): stopping it", jail.name, why)
            if self.on_lost is not None:
                self.on_lost(jail.id, why)
        return changed

    def _repair(self, where: str) -> tuple[bool, list[tuple[Jail, str]]]:
        """One look at the backend's and the host firewalls' state, one log line for what was put back;
        (whether anything was, the jails that could not be repaired)."""
        with self._lock:
            jails = nat_jails(self._jails)
            if not jails:
                return False, []
            guard = self.forwarding.guard_ifnames()
            damage = self.firewall.damaged([jail.firewall_rules for jail in jails], guard is not None)
            done, lost, repaired = [], [], []
            try:
                if damage.shared:
                    self.firewall.sweep(set())  # the first install makes the shared parts again
                    done.append(f"{self.firewall.name}: appjail's shared chains were gone")
                if rules.GUARD_CHAIN in damage.owners:
                    self.firewall.set_guard(guard)
                    done.append("forwarding guard put back")
            except backends.FirewallError as exc:
                damage.owners |= {jail.firewall_rules.chain for jail in jails}
                done.append(f"the shared parts could not be made again: {exc}")
            for jail in jails:
                if jail.firewall_rules.chain in damage.owners:
                    try:
                        self.firewall.remove(jail.firewall_rules)
                        self.firewall.install(jail.firewall_rules)
                        repaired.append(jail)
                    except (backends.FirewallError, OSError) as exc:
                        lost.append((jail, str(exc)))
            if repaired:
                names = ", ".join(j.name for j in repaired[:NAMED]) + (", ..." if len(repaired) > NAMED else "")
                done.append(f"rules of {len(repaired)} jail(s) put back ({names})")
            reopened = self._reopen()
            done += reopened
            if not done and not lost:
                return False, lost
            what = f"host firewall changed ({where}): " + "; ".join(done or ["nothing could be put back"])
            now = time.time()
            for jail in jails if damage.shared or reopened or rules.GUARD_CHAIN in damage.owners else repaired:
                jail.repairs.note(now, what)
            log.warning("%s", what)
            return True, lost

    def _reopen(self) -> list[str]:
        try:
            return self.host.coexist.check()
        except CoexistError as exc:
            log.error("%s", exc)
            return []

    # -- reconcile ---------------------------------------------------------

    def reconcile(self, adopt: bool = True) -> ReconcileReport:
        """Adopt finished jails from the records; remove every other aj-* trace."""
        report = ReconcileReport()
        adopted: list[Jail] = []
        with self._lock:
            records, _unreadable = self.store.load_all()
            links = set(self.system.list_link_names())
            namespaces = set(self.system.list_namespaces(PREFIX))
            for record in records:
                if (adopt and record.status == READY and (record.owner_uid, record.spec.name) not in self._jails
                        and record.kernel_name in namespaces and self._complete(record, links)):
                    adopted.append(self._adopt(record))
                    report.adopted.append(record.spec.name)
            with self.system.rtnl() as ipr:
                for step in sweep_order(self.kinds):
                    step.sweep(self.host, ipr, dict(self._jails), report.note)
                lost = self._restore_adopted(ipr, adopted)
            _changed, not_repaired = self._repair("while no helper watched")
            for jail, why in lost + not_repaired:
                self._unregister(jail)
                self._teardown_quietly(jail)
                report.note("jail", f"{jail.name} of uid {jail.owner_uid} (could not be restored: {why})")
        if self._watcher is not None:
            self.refresh_vpn_routes()
        return report

    def _restore_adopted(self, ipr: Any, adopted: list[Jail]) -> list[tuple[Jail, str]]:
        """Each adopted NAT jail's own policy, made again as this helper makes it (an older helper's
        jail may have none); the jails for which that failed."""
        lost = []
        addresses = self.host.policy.host_addresses(ipr)
        for jail in adopted:
            if jail.tunnel is None:
                try:
                    self.host.policy.install(jail.netns, jail.policy, addresses)
                except (backends.FirewallError, OSError) as exc:
                    lost.append((jail, str(exc)))
        return lost

    def _teardown_quietly(self, jail: Jail) -> None:
        try:
            self._teardown(jail)
        except JailError as exc:
            log.error("%s", exc)

    def _complete(self, record: JailRecord, links: set[str]) -> bool:
        """Whether a recorded jail still has its way out: its veth, or its tunnel."""
        name = record.kernel_name
        if record.tunnel is None:
            return name in links
        return self.host.tunnel_drivers()[record.tunnel["type"]].present(name, name)

    def _adopt(self, record: JailRecord) -> Jail:
        addressing = None if record.slot is None else self.pool.addressing(record.slot)
        dns = record.spec.dns
        path = resolv.jail_etc_dir(record.kernel_name, self.etc_netns) / "resolv.conf"
        if not dns and path.exists():
            dns = tuple(resolv.parse_nameservers(path.read_text()))
        jail = Jail(record, addressing, dns, pool=str(self.pool.network))
        self._register(jail)
        return jail
