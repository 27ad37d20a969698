"""A NAT jail's promises, kept inside its own network namespace, where no host tool reaches.

`nft flush ruleset`, `iptables-restore`, ufw, Docker and firewalld all work on
the host's namespace: a table there can vanish at any moment, and with it
whatever it promised. So what a jail must never reach is refused a second
time on the jail's side of its veth, in `table inet appjail` of the jail's
namespace, on the output hook (every packet of a jail is made there):

    ct state established,related accept   replies (published ports, answers)
    ip daddr @host drop                   the host's own addresses
    ip daddr != ADDRESS ip daddr POOL drop
                                          the jail pool: the host's ends of the jails' veths,
                                          other jails, broadcasts (the jail's own address aside)
    ip daddr 224.0.0.0/4 drop             multicast reaches the host's own services too
    denied ranges, and --no-lan's         each drop after its record (see rules)

The jailed program cannot change it: it runs without CAP_NET_ADMIN, with
no_new_privs, in a namespace owned by the initial user namespace (see
launch). No host tool lists or flushes another namespace's ruleset. The set
`host` follows the host's addresses (Engine.links_changed); the host side's
INPUT drop still covers the milliseconds a new address takes to arrive.
--no-lan of a --vpn jail needs no rule here: its routing table sends
everything to the tunnel or back to the jail (netns.set_vpn_table).

The host side keeps its own rules (NAT, forward accepts, published ports, and
the same drops once more, recorded as before): those need repairs when a
host tool removes them (fwwatch), these never do.

Always nftables, whichever backend the host's side uses: the namespace holds
no other tool's rules to coexist with. Every call runs in a fresh thread that
entered the namespace, with its own libnftables context there.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..kernel import netns
from .blocked import Blocked
from .backends import FirewallError
from .rules import DENY, NO_LAN, PREFIX, refused

CHAIN, HOST_SET = "output", "host"
FAMILY, TABLE = "inet", "appjail"
MULTICAST = "224.0.0.0/4"


@dataclass(frozen=True)
class JailPolicy:
    """What a jail's namespace refuses: its rules in the `rules` vocabulary, and its blocked set's name."""

    blocked_set: str
    refusals: tuple[dict, ...]
    address: str  # the jail's own
    pool: str  # the address pool all jails' /30s come from


def build(spec: Any, kernel_name: str, address: str, pool: str) -> JailPolicy:
    """The policy of a jail (spec: model.JailSpec) whose kernel name is kernel_name."""
    name = kernel_name[len(PREFIX):]
    refusals = [rule for cidr in spec.deny for rule in refused(name, {"dst": cidr}, DENY)]
    if not spec.vpn:  # a --vpn jail's routing keeps it off the LAN (see the module's docstring)
        refusals += [rule for cidr in spec.lan_ranges() for rule in refused(name, {"dst": cidr}, NO_LAN)]
    return JailPolicy(kernel_name, tuple(refusals), address, pool)


def install(namespace: str, policy: JailPolicy, host_addresses: Iterable[str]) -> None:
    """The jail's table, made in one transaction (an older one is replaced whole)."""
    from .nft import blocked_set, encode_chain_rule

    commands: list[dict] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                            {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
                            {"add": {"table": {"family": FAMILY, "name": TABLE}}},
                            {"add": {"set": _obj(name=HOST_SET, type="ipv4_addr")}},
                            *_host_elements(host_addresses),
                            {"add": {"set": blocked_set(policy.blocked_set)}},
                            {"add": {"chain": _obj(name=CHAIN, type="filter", hook="output", prio=0,
                                                   policy="accept")}}]
    fixed = [[_ct_established(), {"accept": None}],
             [_daddr("@" + HOST_SET), {"counter": None}, {"drop": None}],
             [_daddr(policy.address, "!="), _daddr(_prefix(policy.pool)), {"counter": None}, {"drop": None}],
             [_daddr(_prefix(MULTICAST)), {"counter": None}, {"drop": None}]]
    commands += [{"add": {"rule": _obj(chain=CHAIN, expr=expr)}} for expr in fixed]
    commands += [{"add": {"rule": rule}} for neutral in policy.refusals
                 for rule in encode_chain_rule(CHAIN, neutral)]
    _run_in(namespace, commands)


def set_host_addresses(namespace: str, host_addresses: Iterable[str]) -> None:
    """Replace the set of the host's addresses (one transaction: never empty in between)."""
    _run_in(namespace, [{"flush": {"set": _obj(name=HOST_SET)}}, *_host_elements(host_addresses)])


def read_blocked(namespace: str, blocked_set: str, now: int) -> list[Blocked]:
    """The destinations the jail's own namespace refused (a netlink dump there); when the set is full,
    its least recently hit tenth goes, so new destinations find room (as firewall/nft.py does)."""
    from .nft import read_set_elements, room_made

    def read() -> list[Blocked]:
        entries = read_set_elements(blocked_set, now)
        if trim := room_made(blocked_set, entries):
            _context().json_cmd({"nftables": trim})
        return entries

    return netns.run_in_namespace(namespace, read)


def read_dropped(namespaces: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(packets, bytes) each jail's own namespace dropped, by namespace (a netlink dump in each)."""
    from .nft import read_rule_counters

    def dropped() -> tuple[int, int]:
        counted = [counter for _comment, counter in read_rule_counters(CHAIN).get(CHAIN, [])]
        return sum(packets for packets, _size in counted), sum(size for _packets, size in counted)

    return netns.run_in_each(namespaces, dropped)


def host_addresses(ipr: Any) -> set[str]:
    """The IPv4 addresses of the calling thread's namespace (pyroute2 IPRoute ipr), but the jails' veths'
    (the pool's rule covers those: jails come and go without every jail's set changing)."""
    return {message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
            for message in ipr.get_addr(family=socket.AF_INET)
            if not (message.get_attr("IFA_LABEL") or "").startswith(PREFIX)}


def _host_elements(addresses: Iterable[str]) -> list[dict]:
    found = sorted(set(addresses))
    return [{"add": {"element": _obj(name=HOST_SET, elem=found)}}] if found else []


def _run_in(namespace: str, commands: list[dict]) -> None:
    def run() -> None:
        rc, _output, error = _context().json_cmd({"nftables": commands})
        if rc != 0:
            raise FirewallError("nftables refused the jail's own policy: " + " ".join(error.split()))

    netns.run_in_namespace(namespace, run)


def _context() -> Any:
    """A libnftables context made in the calling thread, so its socket is in that thread's namespace."""
    import nftables

    nft = nftables.Nftables()
    nft.set_json_output(True)
    return nft


def _ct_established() -> dict:
    return {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}


def _daddr(right: Any, op: str = "==") -> dict:
    return {"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": right}}


def _prefix(cidr: str) -> dict:
    network, length = cidr.split("/")
    return {"prefix": {"addr": network, "len": int(length)}}


def _obj(**fields: Any) -> dict:
    return {"family": FAMILY, "table": TABLE, **fields}
