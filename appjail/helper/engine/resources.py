"""A jail's resources, each described once: how it is made, undone, and found as a leftover.

A jail is of one kind, and each kind has its list of steps (KINDS): a NAT
jail (RESOURCES: held ports, veth, routing, firewall, forwarding) or a
tunnel jail (TUNNEL_RESOURCES: its own WireGuard or OpenVPN interface,
nothing on the host's side). The engine makes a jail's steps in order; a
failure undoes the ones already made, in reverse. Teardown undoes all of
them in reverse, which puts the door first: the jail is cut off before
anything else goes. Reconcile asks each step, in the same reverse order, to
remove what no live jail accounts for (and the held ports to come back for
adopted jails: a socket does not outlive its helper).

Steps touch the system only through `Host`, so a stand-in with the same
functions (tests/unit/fakehost.py) lets the engine's logic run without root.
Every undo tolerates what is already gone: teardown of an adopted jail, or
of one a user damaged, goes as far as it can. Every name a step gives the
kernel is the jail's recorded kernel name (`jail.netns`, `jail.host_ifname`:
aj-NAME, or a unique one when another owner's jail has that), never one
derived from the jail's name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..firewall import rules, traffic
from ..kernel import resolv
from ..firewall.coexist import Coexistence
from ..firewall.backends import FirewallBackend
from ..firewall.forwarding import Forwarding
from .drivers import Drivers, TunnelDriver
from .jail import NAT, TUNNEL, Jail, JailId
from .pool import RULE_PRIORITY, TABLE_BASE, AddressPool, JailAddressing
from .state import READY, StateStore


log = logging.getLogger(__name__)
PREFIX = rules.PREFIX

WIREGUARD, OPENVPN = "wireguard", "openvpn"  # a tunnel jail's types (its record's tunnel["type"])
Note = Callable[[str, str], None]  # note(kind, name): what reconcile removed


@dataclass
class Host(Drivers):
    """Everything the steps touch: the machine's drivers (or in-memory fakes), and the engine's parts."""

    firewall: FirewallBackend
    forwarding: Forwarding
    store: StateStore
    etc_netns: Path
    jails: Mapping[JailId, Jail]  # the engine's live jails
    pool: AddressPool
    coexist: Coexistence
    forwards: Any  # the jails' forwarded ports (portforward.Forwards), or a stand-in
    other_firewalls: Callable[[], list[FirewallBackend]] = lambda: []
    # from a tunnel daemon's thread: the jail's tunnel came up, or its daemon ended
    tunnel_changed: Callable[[Jail], None] = lambda jail: None
    # from a forwarder's thread: a --vpn jail's forwarded port changed (Engine.forward_to)
    forwarded_changed: Callable[[Jail, int | None], None] = lambda jail, port: None

    def tunnel_drivers(self) -> dict[str, TunnelDriver]:
        """Each tunnel type's driver: make, remove, present, sweep, status, counters."""
        return {WIREGUARD: self.wireguard, OPENVPN: self.openvpn}

    def driver(self, jail: Jail) -> TunnelDriver:
        return self.tunnel_drivers()[jail.tunnel["type"]]


class Step(Protocol):
    """make leaves nothing behind when it fails; undo and sweep tolerate what is gone."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None: ...

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None: ...

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None: ...


class Record:
    """/run/appjail/jails/ID.json (kernel name aj-ID), written before anything else exists."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.store.save(jail.record)

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.store.delete(jail.netns)

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        records, unreadable = host.store.load_all()
        for path in unreadable:
            path.unlink(missing_ok=True)
            note("record", path.name)
        live_names = {jail.netns for jail in live.values()}
        for record in records:
            if record.kernel_name not in live_names:
                host.store.delete(record.kernel_name)


class PublishedPorts:
    """Each published address:port, held by a socket of the helper's while the jail lives (see hostports).

    Made before the namespace, since binding is also the check that no host
    socket has the port: a taken one fails before anything else exists.
    Undone after the rules: only with no DNAT left may another socket take
    the ports.
    """

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        jail.held_ports = host.ports.hold(jail.spec.publish)

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.ports.release(jail.held_ports or ())
        jail.held_ports = []

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        """Sockets die with their helper, so nothing is left over; an adopted jail's ports are held again.

        One taken while no helper held it stays the other socket's: the jail
        keeps running (stopping it would let anyone who binds a port during
        a restart end its owner's programs), its DNAT rules still take
        everything but loopback, and `inspect` and `ls` name the port.
        """
        for jail in live.values():
            if jail.held_ports is None:
                jail.held_ports, lost = host.ports.hold_each(jail.spec.publish)
                jail.ports_not_held = tuple(entry for entry, _why in lost)
                for entry, why in lost:
                    log.warning("jail %s: cannot hold its published port %s again: %s", jail.name, entry, why)


class Namespace:
    """/run/netns/aj-ID."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.kernel.create_namespace(jail.netns)

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.kernel.delete_namespace(jail.netns)

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        for name in sorted(set(host.kernel.list_namespaces(PREFIX)) - kept_namespaces(host, live)):
            host.kernel.delete_namespace(name)
            note("namespace", name)


def kept_namespaces(host: Host, live: Mapping[JailId, Jail]) -> set[str]:
    """The aj-* namespaces reconcile leaves: live jails', and other helpers'.

    /run/netns is machine-wide, links are not: a namespace whose veth ends in
    another network namespace belongs to a helper running there (the
    demo's, a test's).
    A tunnel jail has no veth: its namespace is another helper's when it
    holds its tunnel and no record of ours names it.
    """
    own_links = set(host.kernel.list_link_names())
    ours = {record.kernel_name for record in host.store.load_all()[0]}
    live_names = {jail.netns for jail in live.values()}
    kept = set()
    for name in host.kernel.list_namespaces(PREFIX):
        if name in live_names:
            kept.add(name)
        elif name not in own_links and host.kernel.run_in_namespace(
                name, lambda: host.kernel.link_index(host.kernel.JAIL_IFNAME) is not None):
            log.info("leaving %s alone: its veth peer is in another network namespace", name)
            kept.add(name)
        elif name not in ours and host.wireguard.present(name, name):
            log.info("leaving %s alone: a tunnel jail no record of ours names", name)
            kept.add(name)
    return kept


def nat_jails(jails: Mapping[JailId, Jail]) -> list[Jail]:
    """The jails that route through the host (a tunnel jail needs no forwarding)."""
    return [jail for jail in jails.values() if jail.tunnel is None]


class Veth:
    """The pair aj-ID (host) / eth0 (jail), addressed, up, with the jail's default route."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        netns, addressing = host.kernel, jail.addressing
        if jail.host_ifname in netns.list_link_names() and not netns.wait_until_gone(ipr, jail.host_ifname):
            # the namespace of an earlier jail of this name is still being torn down
            raise netns.NetnsError(f"interface {jail.host_ifname} still exists")
        netns.create_veth(ipr, jail.host_ifname, jail.netns)
        netns.configure_host_end(ipr, jail.host_ifname, addressing.host_address, addressing.prefixlen)
        netns.run_in_namespace(jail.netns, lambda: netns.configure_jail_side(
            addressing.jail_address, addressing.prefixlen, addressing.host_address))

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        """The address goes back to the pool without its connections, and only after a while.

        Here, after the door and the rules: nothing can open a connection of
        the jail's any more. A later jail on the address, maybe another
        user's, neither lists these connections nor receives their late
        packets (the pool's quarantine covers those).
        """
        host.kernel.delete_link(ipr, jail.host_ifname)  # retired by the door already, in a teardown
        _give_back(host, jail.addressing)

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        """Leftover links go; so do the addresses of recorded jails not adopted (a crashed helper's),
        as a teardown gives them back: held back, without their connections."""
        live_ifnames = {jail.host_ifname for jail in live.values()}
        for name in host.kernel.list_link_names():
            if (name.startswith(PREFIX) and name not in live_ifnames) or name.startswith(
                    host.kernel.RETIRED_PREFIX):
                host.kernel.delete_link(ipr, name)
                note("link", name)
        live_names = {jail.netns for jail in live.values()}
        records, _unreadable = host.store.load_all()
        for record in records:
            if record.slot is not None and record.kernel_name not in live_names:
                addressing = host.pool.addressing(record.slot)
                _give_back(host, addressing)
                note("connections of", addressing.jail_address)


def _give_back(host: Host, addressing: JailAddressing) -> None:
    host.pool.release(addressing.slot)
    host.conntrack.forget_connections_soon(addressing.jail_address)


class VpnRouting:
    """A --vpn jail's policy rule and routing table (VPN route, turn-back, unreachable)."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        if jail.spec.vpn:
            try:
                host.kernel.set_vpn_table(ipr, jail.addressing.table, jail.spec.vpn, jail.host_ifname)
                host.kernel.add_policy_rule(ipr, jail.host_ifname, jail.addressing.table, RULE_PRIORITY)
            except BaseException:
                self.undo(host, ipr, jail)
                raise

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        if jail.spec.vpn:
            host.kernel.delete_policy_rule(ipr, jail.host_ifname, jail.addressing.table, RULE_PRIORITY)
            host.kernel.flush_table(ipr, jail.addressing.table)

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        live_ifnames = {jail.host_ifname for jail in nat_jails(live)}
        live_tables = {jail.addressing.table for jail in nat_jails(live)}
        for iifname, table in host.kernel.policy_rules(ipr, RULE_PRIORITY):
            if iifname not in live_ifnames or table not in live_tables:
                host.kernel.delete_policy_rule(ipr, iifname, table, RULE_PRIORITY)
                note("policy rule", f"{iifname} table {table}")
        ours = range(TABLE_BASE, TABLE_BASE + host.pool.size)
        for table in sorted(host.kernel.route_tables(ipr)):
            if table in ours and table not in live_tables:
                host.kernel.flush_table(ipr, table)
                note("routing table", str(table))


class EgressForwarding:
    """Forwarding on the egress interfaces (and the guard); put back when no jail is left."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        links = host.kernel.list_link_names()
        egress = [jail.spec.vpn] if jail.spec.vpn else [
            name for name in links if name != "lo" and not name.startswith(PREFIX)]
        host.forwarding.enable(egress, links)

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        if not nat_jails(host.jails):
            host.forwarding.restore(host.kernel.list_link_names())

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        if not nat_jails(live):
            host.forwarding.restore(host.kernel.list_link_names())


class Rules:
    """The jail's chain and hooks in the firewall backend."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        # per-connection bytes for `inspect` (applies to connections from now on)
        host.kernel.write_sysctl(traffic.CONNTRACK_ACCT, "1")
        host.firewall.install(jail.firewall_rules)

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.firewall.remove(jail.firewall_rules)

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        owners = {jail.firewall_rules.chain for jail in nat_jails(live)}
        if nat_jails(live) and host.forwarding.active():
            owners.add(rules.GUARD_CHAIN)
        for backend, keep in [(host.firewall, owners), *((other, set()) for other in host.other_firewalls())]:
            residue = backend.sweep(keep)  # another backend: left by a helper set otherwise
            for owner in sorted(residue.owners | residue.chains):
                note(f"netfilter ({backend.name})", owner)


class JailPolicyStep:
    """The jail's own refusals, inside its namespace (see jailpolicy); they go with the namespace."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.policy.install(jail.netns, jail.policy, host.policy.host_addresses(ipr))

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        pass

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        pass  # an adopted jail's is made again by Engine.reconcile (_restore_adopted)


class Resolver:
    """/etc/netns/aj-ID/{resolv.conf,nsswitch.conf}."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        resolv.write_resolver_files(jail.netns, jail.dns, host.etc_netns)

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        resolv.remove_resolver_files(jail.netns, host.etc_netns)

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        kept = kept_namespaces(host, live)
        for directory in sorted(host.etc_netns.glob(PREFIX + "*")):
            if directory.name not in kept:
                resolv.remove_resolver_files(directory.name, host.etc_netns)
                note("resolver files", directory.name)


class HostFirewalls:
    """Openings for appjail's interfaces in the host's other firewalls (see coexist), while jails exist."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.coexist.open()

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        if not nat_jails(host.jails):
            host.coexist.close()

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        for item in host.coexist.sweep(bool(nat_jails(live))):
            note("coexist", item)


class Door:
    """Forwarding from the jail's veth: on last, after its rules exist; shut first.

    There is no moment in which a jail is connected but not filtered.
    Shutting it takes the veth down and renames it: deleting it would wait
    ~25 ms for the kernel's RCU grace period, and the pair goes with the
    namespace anyway, while the jail's name is free again at once.
    """

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        if any(publish.on_loopback for publish in jail.spec.publish):
            # the host's 127/8, DNATed to the jail, may leave through its veth (then masqueraded)
            # and the replies come back; new traffic from the jail to the host stays dropped
            host.kernel.write_sysctl(f"net/ipv4/conf/{jail.host_ifname}/route_localnet", "1")
        host.kernel.write_sysctl(f"net/ipv4/conf/{jail.host_ifname}/forwarding", "1")

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.kernel.retire_link(ipr, jail.host_ifname)

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        pass  # a leftover door is a leftover veth


class Tunnel:
    """The jail's own tunnel interface aj-ID, made in the host namespace and moved in.

    Its encrypted socket (the kernel's, wireguard-go's or openvpn's) stays in
    the host namespace; in the jail the interface is the only one beside lo.
    WireGuard's is made, keyed and moved here; openvpn makes its own device
    when it has connected, and its hook hands it over (`_openvpn_up`) on every
    (re)connection. Nothing waits for that here: the jail is `connecting`
    until the first (Engine.connected), and its programs start then.
    """

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        config = jail.secret
        if config is None:
            raise ValueError(f"jail {jail.name} has no tunnel configuration")
        try:
            if jail.tunnel["type"] == OPENVPN:
                host.openvpn.start(jail.tunnel_ifname, config.config_text(), *_openvpn_callbacks(host, jail))
                jail.connecting = True
            else:
                jail.record.tunnel["implementation"] = host.wireguard.make(ipr, jail.netns, jail.tunnel_ifname,
                                                                           config)
        except BaseException:
            self.undo(host, ipr, jail)
            raise
        log.info("jail %s: %s (%s) to %s", jail.name, jail.tunnel["type"], jail.tunnel.get("implementation"),
                 jail.tunnel["endpoint"])

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        host.driver(jail).remove(ipr, jail.netns, jail.tunnel_ifname)

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        """An adopted jail's openvpn is served again (hook, log, state: they died with its helper)."""
        for jail in live.values():
            if jail.tunnel is not None and jail.tunnel["type"] == OPENVPN:
                host.openvpn.adopt(jail.tunnel_ifname, *_openvpn_callbacks(host, jail))
        for kind, driver in host.tunnel_drivers().items():
            live_ifnames = {jail.tunnel_ifname for jail in live.values()
                            if jail.tunnel is not None and jail.tunnel["type"] == kind}
            for name in driver.sweep(PREFIX, live_ifnames):
                note(kind, name)


def _openvpn_callbacks(host: Host, jail: Jail) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """What a jail's openvpn daemon calls on its thread: on each tunnel-up, and on any change."""
    return (lambda up: _openvpn_up(host, jail, up)), (lambda: host.tunnel_changed(jail))


def _openvpn_up(host: Host, jail: Jail, up: Any) -> None:
    """openvpn's device is up (in the host namespace, unconfigured): into the jail, configured there, and
    the jail's resolver pointed at pushed DNS."""
    host.openvpn.place(jail.netns, jail.tunnel_ifname, up)
    jail.record.tunnel["addresses"] = [str(address) for address in up.addresses]
    if not jail.spec.dns and up.dns and up.dns != jail.dns:
        jail.dns = up.dns
        # made already (the Resolver step) or not yet, which then writes jail.dns
        if resolv.jail_etc_dir(jail.netns, host.etc_netns).is_dir():
            resolv.replace_resolv_conf(jail.netns, jail.dns, host.etc_netns)


class ForwardedPort:
    """With forward_port: the port the VPN's gateway forwards, asked, renewed and handed over by a
    thread of the jail's (portforward), which stops with the jail. An adopted jail's starts at
    reconcile, asking first for the port it held (its file), which a --vpn jail's rules keep meanwhile."""

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        if jail.spec.forward_port:
            jail.forwarder = self.start(host, jail)

    @staticmethod
    def start(host: Host, jail: Jail) -> Any:
        return host.forwards.start(jail, lambda port: host.forwarded_changed(jail, port))

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        if jail.forwarder is not None:
            jail.forwarder.stop()
            jail.forwarder = None

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        for name in host.forwards.sweep({jail.netns for jail in live.values()}):
            note("forwarded port file", name)
        for jail in live.values():
            if jail.spec.forward_port and jail.forwarder is None:
                if jail.tunnel is None:
                    jail.forwarded_port = host.forwards.recorded(jail)  # before reconcile's repair
                jail.forwarder = self.start(host, jail)


class Ready:
    """The record says the jail is complete: reconcile adopts it from now on.

    A connecting jail is complete once its tunnel first came up (Engine.connected
    marks it then): one whose helper died before is not adopted, but swept.
    """

    def make(self, host: Host, ipr: Any, jail: Jail) -> None:
        if not jail.connecting:
            self.mark(host, jail)

    @staticmethod
    def mark(host: Host, jail: Jail) -> None:
        jail.record.status = READY
        host.store.save(jail.record)

    def undo(self, host: Host, ipr: Any, jail: Jail) -> None:
        pass  # the record goes with Record

    def sweep(self, host: Host, ipr: Any, live: Mapping[JailId, Jail], note: Note) -> None:
        pass


RESOURCES: tuple[Step, ...] = (Record(), PublishedPorts(), Namespace(), Veth(), VpnRouting(), EgressForwarding(),
                               Rules(), JailPolicyStep(), Resolver(), HostFirewalls(), Door(), ForwardedPort(),
                               Ready())
TUNNEL_RESOURCES: tuple[Step, ...] = (Record(), Namespace(), Tunnel(), Resolver(), ForwardedPort(), Ready())
KINDS: dict[str, tuple[Step, ...]] = {NAT: RESOURCES, TUNNEL: TUNNEL_RESOURCES}


def sweep_order(kinds: Mapping[str, tuple[Step, ...]]) -> list[Step]:
    """Every kind's steps, each type once, in the order reconcile sweeps them (reverse of making)."""
    seen: dict[type, Step] = {}
    for steps in kinds.values():
        for step in steps:
            seen.setdefault(type(step), step)
    return list(reversed(seen.values()))
