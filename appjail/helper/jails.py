"""The jail engine: spec in, working namespace out, and back to nothing.

Creation is a transaction: each step pushes its undo before the next step
runs, and a failure unwinds them in reverse. The jail's veth gets forwarding
only as the very last step, after its firewall chain exists, and teardown
deletes the veth first: there is no moment in which a jail is connected but
not filtered. One lock serialises creation, teardown and reconcile.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..model import JailSpec, ValidationError
from . import firewall, hostports, netns, resolv, rules, traffic
from .firewall import Choice, FirewallBackend
from .forwarding import Forwarding
from .hostports import HeldPort
from .linkwatch import LinkWatcher
from .pool import DEFAULT_POOL, RULE_PRIORITY, TABLE_BASE, AddressPool, JailAddressing
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


@dataclass
class Jail:
    record: JailRecord
    addressing: JailAddressing
    dns: tuple[str, ...]
    held_ports: list[HeldPort] = field(default_factory=list)

    @property
    def spec(self) -> JailSpec:
        return self.record.spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def netns(self) -> str:
        return PREFIX + self.name

    @property
    def host_ifname(self) -> str:
        return PREFIX + self.name

    @property
    def owner_uid(self) -> int:
        return self.record.owner_uid

    @cached_property
    def firewall_rules(self) -> rules.JailRules:
        return rules.build_jail_rules(self.spec, self.host_ifname, str(self.addressing.network),
                                         self.addressing.jail_address)


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
                 firewall_choice: Choice | None = None) -> None:
        """firewall_choice: the backend to use (default: firewall.choose() for this host)."""
        self._lock = threading.RLock()
        self._jails: dict[str, Jail] = {}
        self.store = StateStore(run_dir)
        self.firewall_choice = firewall_choice or firewall.choose()
        self.firewall: FirewallBackend = firewall.open_backend(self.firewall_choice.name)
        self.forwarding = Forwarding(run_dir / "forwarding.json", self.firewall)
        self.pool = AddressPool(pool)
        self.etc_netns = etc_netns
        self.upstream_sources = upstream_sources
        self._watcher: LinkWatcher | None = None
        # called (from the link watcher's thread) as on_vpn_change(jail, up)
        # whenever a VPN jail's interface goes away or comes back
        self.on_vpn_change: Callable[[str, bool], None] | None = None
        self._vpn_up: dict[str, bool] = {}

    # -- queries ---------------------------------------------------------

    def get(self, name: str) -> Jail:
        with self._lock:
            try:
                return self._jails[name]
            except KeyError:
                raise JailNotFound(f"no jail named {name!r}") from None

    def find(self, name: str) -> Jail | None:
        with self._lock:
            return self._jails.get(name)

    def list(self) -> list[Jail]:
        with self._lock:
            return sorted(self._jails.values(), key=lambda jail: jail.name)

    # -- creation --------------------------------------------------------

    def create(self, spec: JailSpec, owner_uid: int) -> Jail:
        if not isinstance(owner_uid, int) or isinstance(owner_uid, bool) or owner_uid < 0:
            raise ValidationError(f"invalid owner uid {owner_uid!r}")
        with self._lock:
            if spec.name in self._jails:
                raise JailExists(f"a jail named {spec.name!r} already exists")
            self._check_ports(spec)
            try:
                dns = spec.dns or tuple(resolv.host_upstream_servers(self.upstream_sources))
            except resolv.NoUpstreamDNS as exc:
                raise JailError(str(exc)) from None
            with netns.rtnl() as ipr:
                addressing = self._allocate()
                jail = Jail(JailRecord(spec, owner_uid, addressing.slot), addressing, dns)
                undo: list[Callable[[], None]] = []
                try:
                    self._build(ipr, jail, undo)
                except BaseException as exc:
                    self._unwind(undo)
                    if isinstance(exc, hostports.PortInUse):
                        raise Conflict(str(exc)) from None
                    if isinstance(exc, (firewall.FirewallError, netns.NetnsError, OSError)):
                        raise JailError(f"could not create jail {spec.name!r}: {exc}") from exc
                    raise
            self._jails[spec.name] = jail
            return jail

    def _check_ports(self, spec: JailSpec) -> None:
        """Ports of other jails; the host's own are checked by holding them (_build)."""
        for publish in spec.publish:
            for other in self._jails.values():
                if any(publish.overlaps(theirs) for theirs in other.spec.publish):
                    raise Conflict(f"port {publish.host_port}/{publish.proto} is already "
                                   f"published by another jail ({other.name})")

    def _allocate(self) -> JailAddressing:
        host_routes = [ipaddress.IPv4Network(f"{dst}/{length}", strict=False)
                       for dst, length, dev in netns.ipv4_routes()
                       if not (dev or "").startswith(PREFIX)]
        used = {jail.addressing.slot for jail in self._jails.values()}
        return self.pool.allocate(used, host_routes)

    def _build(self, ipr, jail: Jail, undo: list[Callable[[], None]]) -> None:
        """Each step cleans up its own failure; its undo is pushed once it succeeded."""
        spec, addressing = jail.spec, jail.addressing
        self.store.save(jail.record)
        undo.append(lambda: self.store.delete(spec.name))
        jail.held_ports = hostports.hold(spec.publish)
        undo.append(lambda: hostports.release(jail.held_ports))

        links = netns.list_link_names()
        if jail.host_ifname in links and not netns.wait_until_gone(ipr, jail.host_ifname):
            # the namespace of an earlier jail of this name is still being torn down
            raise netns.NetnsError(f"interface {jail.host_ifname} still exists")
        netns.create_namespace(jail.netns)
        undo.append(lambda: netns.delete_namespace(jail.netns))
        netns.create_veth(ipr, jail.host_ifname, jail.netns)
        undo.append(lambda: netns.delete_link(ipr, jail.host_ifname))
        netns.configure_host_end(ipr, jail.host_ifname, addressing.host_address, addressing.prefixlen)
        netns.run_in_namespace(jail.netns, lambda: netns.configure_jail_side(
            addressing.jail_address, addressing.prefixlen, addressing.host_address))

        if spec.vpn:
            undo.append(lambda: self._remove_vpn_routing(ipr, jail))  # removes what exists
            netns.set_vpn_table(ipr, addressing.table, spec.vpn, jail.host_ifname)
            netns.add_policy_rule(ipr, jail.host_ifname, addressing.table, RULE_PRIORITY)

        undo.append(self._restore_forwarding_if_idle)
        egress = [spec.vpn] if spec.vpn else [
            name for name in links if name != "lo" and not name.startswith(PREFIX)]
        self.forwarding.enable(egress, [*links, jail.host_ifname])

        # per-connection bytes for `inspect` (applies to connections from now on)
        netns.write_sysctl(traffic.CONNTRACK_ACCT, "1")
        jail_rules = jail.firewall_rules
        self.firewall.install(jail_rules)
        undo.append(lambda: self.firewall.remove(jail_rules))

        resolv.write_resolver_files(jail.netns, jail.dns, self.etc_netns)
        undo.append(lambda: resolv.remove_resolver_files(jail.netns, self.etc_netns))

        # the door opens last: only now may packets from the jail be forwarded
        netns.write_sysctl(f"net/ipv4/conf/{jail.host_ifname}/forwarding", "1")
        jail.record.status = READY
        self.store.save(jail.record)

    @staticmethod
    def _unwind(undo: list[Callable[[], None]]) -> None:
        for step in reversed(undo):
            try:
                step()
            except Exception:
                log.exception("rollback step failed")

    # -- teardown --------------------------------------------------------

    def destroy(self, name: str) -> None:
        with self._lock:
            jail = self.get(name)
            del self._jails[name]
            self._teardown(jail)

    def _teardown(self, jail: Jail) -> None:
        errors = []

        def attempt(step: Callable[[], None]) -> None:
            try:
                step()
            except Exception as exc:
                log.exception("teardown of %s: step failed", jail.name)
                errors.append(exc)

        with netns.rtnl() as ipr:
            # the jail is cut off first. Deleting the veth would wait for the
            # kernel's RCU grace period (~25 ms); the pair goes with the
            # namespace instead, in the kernel's own time, renamed meanwhile
            attempt(lambda: netns.retire_link(ipr, jail.host_ifname))
            if jail.spec.vpn:
                attempt(lambda: self._remove_vpn_routing(ipr, jail))
        attempt(lambda: self.firewall.remove(jail.firewall_rules))
        # only now, with no DNAT left, may another socket take the ports
        attempt(lambda: hostports.release(jail.held_ports))
        attempt(lambda: netns.delete_namespace(jail.netns))
        # the address goes back to the pool without its connections, and only after a while
        attempt(lambda: traffic.forget_connections(jail.addressing.jail_address))
        self.pool.release(jail.addressing.slot)
        attempt(lambda: resolv.remove_resolver_files(jail.netns, self.etc_netns))
        attempt(self._restore_forwarding_if_idle)
        if errors:
            raise JailError(f"jail {jail.name!r} was not removed completely: {errors[0]}")
        self.store.delete(jail.name)

    @staticmethod
    def _remove_vpn_routing(ipr, jail: Jail) -> None:
        netns.delete_policy_rule(ipr, jail.host_ifname, jail.addressing.table, RULE_PRIORITY)
        netns.flush_table(ipr, jail.addressing.table)

    def _restore_forwarding_if_idle(self) -> None:
        if not self._jails:
            self.forwarding.restore(netns.list_link_names())

    # -- VPN interface changes ---------------------------------------------

    def refresh_vpn_routes(self) -> None:
        """Point each VPN jail's table at its interface again, if it is up.

        Called on every link change: a recreated VPN interface gets the
        route back; a missing one leaves only the unreachable route.
        """
        changed = []
        with self._lock:
            vpn_jails = [jail for jail in self._jails.values() if jail.spec.vpn]
            for name in set(self._vpn_up) - {jail.name for jail in vpn_jails}:
                del self._vpn_up[name]
            # every link event lands here: no netlink socket when no jail needs one
            with netns.rtnl() if vpn_jails else nullcontext() as ipr:
                for jail in vpn_jails:
                    netns.set_vpn_table(ipr, jail.addressing.table, jail.spec.vpn, jail.host_ifname)
                    up = netns.link_is_up(jail.spec.vpn)
                    if self._vpn_up.setdefault(jail.name, up) != up:
                        self._vpn_up[jail.name] = up
                        changed.append((jail.name, up))
        for name, up in changed:
            if self.on_vpn_change is not None:
                self.on_vpn_change(name, up)

    def vpn_up(self, ifname: str) -> bool:
        return netns.link_is_up(ifname)

    def start_link_watch(self) -> None:
        """Follow link changes from a thread in the caller's namespace."""
        if self._watcher is None:
            self._watcher = LinkWatcher(self.refresh_vpn_routes)
            self._watcher.start()
            self.refresh_vpn_routes()

    def close(self) -> None:
        """Stop watching links; jails stay (destroy them first if wanted)."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    # -- reconcile ---------------------------------------------------------

    def reconcile(self, adopt: bool = True) -> ReconcileReport:
        """Adopt finished jails from the records; remove every other aj-* trace."""
        report = ReconcileReport()
        with self._lock:
            records, unreadable = self.store.load_all()
            for path in unreadable:
                path.unlink(missing_ok=True)
                report.note("record", path.name)
            with netns.rtnl() as ipr:
                links = set(netns.list_link_names())
                for record in records:
                    name = record.spec.name
                    if (adopt and record.status == READY and name not in self._jails
                            and (PREFIX + name) in links
                            and netns.netns_path(PREFIX + name).exists()):
                        self._adopt(record)
                        report.adopted.append(name)
                    elif name not in self._jails:
                        self.store.delete(name)
                live = set(self._jails)
                self._sweep_kernel(ipr, live, report)
            self._sweep_firewall(live, report)
            kept = set(netns.list_namespaces(PREFIX))  # live, or another helper's
            for directory in sorted(self.etc_netns.glob(PREFIX + "*")):
                if directory.name not in kept:
                    resolv.remove_resolver_files(directory.name, self.etc_netns)
                    report.note("resolver files", directory.name)
            if not live:
                self._restore_forwarding_if_idle()
        if self._watcher is not None:
            self.refresh_vpn_routes()
        return report

    def _adopt(self, record: JailRecord) -> None:
        addressing = self.pool.addressing(record.slot)
        dns = record.spec.dns
        path = resolv.jail_etc_dir(PREFIX + record.spec.name, self.etc_netns) / "resolv.conf"
        if not dns and path.exists():
            dns = tuple(resolv.parse_nameservers(path.read_text()))
        jail = Jail(record, addressing, dns)
        try:
            jail.held_ports = hostports.hold(record.spec.publish)
        except (hostports.PortInUse, OSError) as exc:
            # taken while no helper held it: the DNAT rules still win over that socket
            log.warning("jail %s: cannot hold its published ports again: %s", record.spec.name, exc)
        self._jails[record.spec.name] = jail

    def _sweep_kernel(self, ipr, live: set[str], report: ReconcileReport) -> None:
        live_ifnames = {PREFIX + name for name in live}
        own_links = set(netns.list_link_names())
        live_tables = {self._jails[name].addressing.table for name in live}
        for name in netns.list_link_names():
            if (name.startswith(PREFIX) and name not in live_ifnames) or name.startswith(netns.RETIRED_PREFIX):
                netns.delete_link(ipr, name)
                report.note("link", name)
        for iifname, table in netns.policy_rules(ipr, RULE_PRIORITY):
            if iifname not in live_ifnames or table not in live_tables:
                netns.delete_policy_rule(ipr, iifname, table, RULE_PRIORITY)
                report.note("policy rule", f"{iifname} table {table}")
        for table in self._stale_tables(ipr, live_tables):
            netns.flush_table(ipr, table)
            report.note("routing table", str(table))
        for name in netns.list_namespaces(PREFIX):
            if name[len(PREFIX):] in live:
                continue
            if name not in own_links and netns.run_in_namespace(name, _has_jail_link):
                # /run/netns is machine-wide, links are not: a namespace whose
                # veth ends in another network namespace belongs to a helper
                # running there (the demo's, a test's)
                log.info("leaving %s alone: its veth peer is in another network namespace", name)
                continue
            netns.delete_namespace(name)
            report.note("namespace", name)

    def _stale_tables(self, ipr, live_tables: set[int]) -> set[int]:
        ours = range(TABLE_BASE, TABLE_BASE + self.pool.size)
        return {table for table in netns.route_tables(ipr)
                if table in ours and table not in live_tables}

    def _sweep_firewall(self, live: set[str], report: ReconcileReport) -> None:
        owners = {rules.jail_chain(name) for name in live}
        if live and self.forwarding.active():
            owners.add(rules.GUARD_CHAIN)
        residue = self.firewall.sweep(owners)
        for owner in sorted(residue.owners | residue.chains):
            report.note("netfilter", owner)
        for other in firewall.other_backends(self.firewall.name):  # left by a helper set otherwise
            residue = other.sweep(set())
            for owner in sorted(residue.owners | residue.chains):
                report.note(f"netfilter ({other.name})", owner)


def _has_jail_link() -> bool:
    """Run inside a jail's namespace: whether its end of a veth pair is there."""
    return netns.link_index(netns.JAIL_IFNAME) is not None
