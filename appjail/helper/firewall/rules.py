"""A jail's netfilter rules as plain data, for every firewall backend.

Rules are dicts in python-iptables' `iptc.easy` form (a small vocabulary:
interfaces, addresses, protocol and port, conntrack state, address type,
comment, target), so building them is pure and unit-tested, and each backend
(xt, nft) only encodes them. Every rule that appjail puts
into a chain it shares (a hook) carries the comment `aj-NAME`: that is how
teardown and reconcile find them without guessing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ...model import PROTOCOLS, JailSpec, Publish

PREFIX = "aj-"
GUARD_CHAIN = "aj-GUARD"  # upper case: never the chain of a jail
LOOPBACK = "127.0.0.0/8"  # a jail gets only what the host sends there itself, at a port published there
ESTABLISHED = {"conntrack": {"ctstate": "RELATED,ESTABLISHED"}}


def jail_chain(name: str) -> str:
    return PREFIX + name


def tag(rule: dict, owner: str) -> dict:
    return {**rule, "comment": {"comment": owner}}


@dataclass(frozen=True)
class Hook:
    """A rule in a built-in chain, inserted at its top."""

    table: str
    chain: str
    rule: dict

    @property
    def table_chain(self) -> tuple[str, str]:
        return self.table, self.chain


@dataclass(frozen=True)
class JailRules:
    """A jail's chain, and how traffic reaches it: as hooks into shared chains
    (x_tables), and as the facts those hooks say (nftables keys its shared
    chains' maps and sets by them)."""

    name: str
    chain_rules: tuple[dict, ...]
    hooks: tuple[Hook, ...]
    ifname: str
    network: str
    jail_address: str
    vpn: str | None
    publish: tuple[Publish, ...]
    forwarded_port: int | None = None  # the VPN's gateway forwards it (TCP and UDP), in from the VPN only

    @property
    def chain(self) -> str:
        return jail_chain(self.name)

    @property
    def roles(self) -> tuple[str, ...]:
        """What each rule of the chain counts, in order (see read_counters)."""
        return tuple(rule["comment"]["comment"] for rule in self.chain_rules)


# What each rule of a jail's chain counts, kept in its comment: `inspect`
# adds the counters up by role. A `record` rule counts nothing itself: it
# notes the destination of what the drop rule right after it refuses.
ROLE_IN, ROLE_OUT, ROLE_DROPPED, ROLE_RECORD = "in", "out", "dropped", "record"
ROLES = (ROLE_IN, ROLE_OUT, ROLE_DROPPED)

# Why a jail's packet was dropped; a reason's code is its index + 1 (the
# nftables set key and the NFLOG prefix carry the code).
KILL_SWITCH, DENY, NO_LAN, NOT_ALLOWED = "kill switch", "deny", "no-lan", "not allowed"
REASONS = (KILL_SWITCH, DENY, NO_LAN, NOT_ALLOWED)
RECORD = "RECORD"  # the target of a record rule: {"RECORD": {"jail": NAME, "reason": REASON}}


def reason_code(reason: str) -> int:
    return REASONS.index(reason) + 1


def reason_of(code: int) -> str:
    """The reason for a code; an unknown code (another version's) is "not allowed"."""
    return REASONS[code - 1] if 1 <= code <= len(REASONS) else NOT_ALLOWED


def sum_by_role(counted: Iterable[tuple[str | None, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    """(packets, bytes) per role from (role, (packets, bytes)) of each rule; other roles ignored."""
    totals = {role: (0, 0) for role in ROLES}
    for role, (packets, size) in counted:
        if role in totals:
            totals[role] = (totals[role][0] + packets, totals[role][1] + size)
    return totals


def _role(rule: dict, role: str) -> dict:
    return {**rule, "comment": {"comment": role}}


def refused(name: str, matches: dict, reason: str, recorded: dict | None = None) -> list[dict]:
    """A drop, preceded by the record of its destinations under `reason`.

    recorded: what of it is recorded, when not all it drops (default: the same).
    Two rules, not one: a record that cannot be made (a full set) must never
    keep the drop from happening.
    """
    record = {**(matches if recorded is None else recorded), "target": {RECORD: {"jail": name, "reason": reason}}}
    return [_role(record, ROLE_RECORD), _role({**matches, "target": "DROP"}, ROLE_DROPPED)]


def build_jail_rules(spec: JailSpec, host_ifname: str, network: str, jail_address: str,
                     forwarded_port: int | None = None) -> JailRules:
    """The jail's own chain and its hooks into FORWARD, INPUT, PREROUTING, OUTPUT, POSTROUTING.

    host_ifname is the jail's kernel name `aj-ID` (see jails.Engine): its
    veth, its chain and the tag of its hooks; the rules' name is its ID.

    Chain order: replies in; published ports in; replies out (also to denied
    ranges, for connections that came in through a published port); a --vpn
    jail's traffic turned back toward itself (the kill switch: its VPN is
    down) dropped; denied ranges dropped; the jail's own traffic out;
    everything else dropped. Each drop is preceded by its record rule.
    forwarded_port (a --vpn jail's, see portforward): DNATed to the jail, TCP and UDP, when it
    comes in from the VPN interface (never from elsewhere), and accepted like a published port.
    """
    name = host_ifname[len(PREFIX):]
    chain = owner = jail_chain(name)
    vpn = spec.vpn
    egress = {"out-interface": vpn} if vpn else {"out-interface": "!" + PREFIX + "+"}
    from_jail = {"in-interface": host_ifname, "src": jail_address}
    inbound = {"out-interface": host_ifname, **ESTABLISHED, "target": "ACCEPT"}
    if vpn:
        inbound = {"in-interface": vpn, **inbound}
    chain_rules = [_role(inbound, ROLE_IN)]
    forwarded = [Publish(forwarded_port, forwarded_port, proto) for proto in PROTOCOLS] if forwarded_port else []
    chain_rules += [_role({"out-interface": host_ifname, "dst": jail_address, "protocol": p.proto,
                           p.proto: {"dport": str(p.jail_port)}, "conntrack": {"ctstate": "DNAT"},
                           "target": "ACCEPT"}, ROLE_IN) for p in (*spec.publish, *forwarded)]
    if spec.publish or forwarded:
        chain_rules.append(_role({**from_jail, **egress, **ESTABLISHED, "target": "ACCEPT"}, ROLE_OUT))
    if vpn:  # without its VPN, the jail's table routes its traffic back out of its own veth
        chain_rules += refused(name, {**from_jail, "out-interface": host_ifname}, KILL_SWITCH)
    for cidr in spec.deny:
        chain_rules += refused(name, {**from_jail, "dst": cidr}, DENY)
    # the VPN's own ranges are the VPN path: --no-lan keeps them open
    beside_vpn = {"out-interface": "!" + vpn} if vpn else {}
    for cidr in spec.lan_ranges():
        chain_rules += refused(name, {**from_jail, "dst": cidr, **beside_vpn}, NO_LAN)
    chain_rules.append(_role({**from_jail, **egress, "target": "ACCEPT"}, ROLE_OUT))
    # what the jail itself sent, not what reached its veth from elsewhere
    chain_rules += refused(name, {}, NOT_ALLOWED, recorded={"in-interface": host_ifname})
    hooks = [
        Hook("filter", "FORWARD", tag({"in-interface": host_ifname, "target": chain}, owner)),
        Hook("filter", "FORWARD", tag({"out-interface": host_ifname, "target": chain}, owner)),
        # the jail may answer the host, never open anything on it
        Hook("filter", "INPUT", tag({"in-interface": host_ifname, **ESTABLISHED, "target": "ACCEPT"}, owner)),
        Hook("filter", "INPUT", tag({"in-interface": host_ifname, "target": "DROP"}, owner)),
        Hook("nat", "POSTROUTING", tag({"src": network, **egress, "target": "MASQUERADE"}, owner)),
    ]
    for publish in spec.publish:
        dnat = _dnat(publish, jail_address)
        if not publish.on_loopback:  # from elsewhere 127/8 is martian: never let it into a jail
            hooks.append(Hook("nat", "PREROUTING", tag(dnat, owner)))
        hooks.append(Hook("nat", "OUTPUT", tag(_local_dnat(publish, dnat), owner)))
    if any(publish.on_loopback for publish in spec.publish):
        # the jail answers the host end of its veth, not 127/8 (its own loopback); the
        # veth's route_localnet lets the packet out and the reply in (Door)
        hooks.append(Hook("nat", "POSTROUTING", tag({"src": LOOPBACK, "out-interface": host_ifname,
                                                     "target": "MASQUERADE"}, owner)))
    for publish in forwarded:
        rule = {"in-interface": vpn, "protocol": publish.proto, publish.proto: {"dport": str(publish.host_port)},
                "target": {"DNAT": {"to-destination": f"{jail_address}:{publish.jail_port}"}}}
        hooks.append(Hook("nat", "PREROUTING", tag(rule, owner)))
    return JailRules(name, tuple(chain_rules), tuple(hooks), host_ifname, network, jail_address,
                     vpn, spec.publish, forwarded_port)


def _dnat(publish: Publish, jail_address: str) -> dict:
    """Packets to a host address and port, sent on to the jail."""
    rule: dict = {"protocol": publish.proto, publish.proto: {"dport": str(publish.host_port)},
                  "addrtype": {"dst-type": "LOCAL"}}
    if publish.host_address:
        rule["dst"] = publish.host_address
    return {**rule, "target": {"DNAT": {"to-destination": f"{jail_address}:{publish.jail_port}"}}}


def _local_dnat(publish: Publish, dnat: dict) -> dict:
    """The host's own connections to a published port: at the address it is published at, or at any of
    the host's but loopback (only a port published there, whose veth has route_localnet, may take it)."""
    return dnat if publish.host_address else {"dst": "!" + LOOPBACK, **dnat}


def build_guard_rules(forwarding_ifnames: Iterable[str]) -> tuple[dict, ...]:
    """Undo, in FORWARD, the forwarding that appjail had to switch on.

    Replies to a jail enter through the uplink or VPN interface, so those need
    per-interface forwarding. A host that did not forward before must not
    start routing for others: only jail traffic and interfaces on which the
    host itself had forwarding on get past this chain.
    """
    passes = [{"in-interface": PREFIX + "+", "target": "RETURN"},
              {"out-interface": PREFIX + "+", "target": "RETURN"}]
    passes += [{"in-interface": ifname, "target": "RETURN"} for ifname in sorted(forwarding_ifnames)]
    return (*passes, {"target": "DROP"})


