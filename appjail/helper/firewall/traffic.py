"""What a jail's traffic is doing: its chain's counters, what it refused, its live connections.

Counters come from the jail's own filter chain (one read of the filter
table, then only that chain), connections from conntrack. Per-connection
byte counts need conntrack accounting, which the engine switches on in its
namespace (net.netfilter.nf_conntrack_acct) when it creates a jail.
The conntrack table is the whole host's and may hold hundreds of thousands
of entries: `inspect` reads a bounded part of it (CONNTRACK_BUDGET) and
says when its list is cut short.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .blocked import top
from .backends import FirewallBackend
from .rules import ROLE_DROPPED, ROLE_IN, ROLE_OUT

log = logging.getLogger(__name__)
CONNTRACK_ACCT = "net/netfilter/nf_conntrack_acct"
_PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp"}
_IPS_SEEN_REPLY = 1 << 1
_IPS_ASSURED = 1 << 2
# the kernel's TCP conntrack states (linux/netfilter/nf_conntrack_tcp.h), which pyroute2 0.7
# (Debian 12 and 13) does not name
TCP_STATES = {1: "SYN_SENT", 2: "SYN_RECV", 3: "ESTABLISHED", 4: "FIN_WAIT", 5: "CLOSE_WAIT",
              6: "LAST_ACK", 7: "TIME_WAIT", 8: "CLOSE", 9: "LISTEN"}
T = TypeVar("T")


@dataclass
class Budget:
    """How much of a long read one answer may take: `items` entries and `seconds`; `cut` once it ran out."""

    items: int
    seconds: float
    cut: bool = False

    def take(self, entries: Iterable[T]) -> Iterator[T]:
        """`entries` until the budget runs out (then `cut` is set and the rest is not read)."""
        deadline = time.monotonic() + self.seconds
        for count, entry in enumerate(entries):
            if count >= self.items or time.monotonic() > deadline:
                self.cut = True
                return
            yield entry


CONNTRACK_BUDGET = (200_000, 1.0)  # entries read, seconds: one inspect's share of the host's table
MAX_CONNECTIONS = 1000  # of one jail, listed


def counters(firewall: FirewallBackend, layouts: Mapping[str, Sequence[str]],
             dropped_inside: Mapping[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
    """Per jail: tx (its traffic out), rx (replies and published ports in), dropped.

    layouts: jail name -> the roles of its chain's rules (FirewallBackend.read_counters);
    dropped_inside: jail name -> (packets, bytes) its own namespace dropped (jailpolicy).
    """
    result = {}
    for name, totals in firewall.read_counters(layouts).items():
        fields = {}
        for role, prefix in ((ROLE_OUT, "tx"), (ROLE_IN, "rx"), (ROLE_DROPPED, "dropped")):
            fields[f"{prefix}_packets"], fields[f"{prefix}_bytes"] = totals[role]
        packets, size = dropped_inside.get(name, (0, 0))
        fields["dropped_packets"] += packets
        fields["dropped_bytes"] += size
        result[name] = fields
    return result


def blocked(firewall: FirewallBackend, name: str, policy: Any, netns_name: str, blocked_set: str) -> list[dict]:
    """The jail's most hit blocked destinations (blocked.SHOWN of them), as `inspect --json` lists them:
    what the host's rules refused (the kill switch, the rest) and what its own namespace did (see jailpolicy;
    policy: that module, or a stand-in)."""
    now = int(time.time())
    entries = [*firewall.read_blocked(name, now), *policy.read_blocked(netns_name, blocked_set, now)]
    return [entry._asdict() for entry in top(entries)]


def connections(jail_address: str) -> tuple[list[dict], bool]:
    """The jail's conntrack entries: what it opened (out) and what came in to it (in);
    and whether the list is cut short (CONNTRACK_BUDGET ran out, or MAX_CONNECTIONS were found)."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    found: list[dict] = []
    budget = Budget(*CONNTRACK_BUDGET)
    ct = Conntrack()
    try:
        for message in budget.take(ct.dump()):
            if len(found) == MAX_CONNECTIONS:
                budget.cut = True
                break
            family = message["nfgen_family"]
            if family != socket.AF_INET:
                continue
            orig = NFCTAttrTuple.from_netlink(family, message.get_attr("CTA_TUPLE_ORIG"))
            reply = NFCTAttrTuple.from_netlink(family, message.get_attr("CTA_TUPLE_REPLY"))
            sent, received = (_bytes(message, "CTA_COUNTERS_ORIG"), _bytes(message, "CTA_COUNTERS_REPLY"))
            if orig.saddr == jail_address:
                entry = {"direction": "out", "dst": orig.daddr, "dport": orig.dport or 0,
                         "tx_bytes": sent, "rx_bytes": received}
            elif reply.saddr == jail_address:  # a published port: the peer came to us
                entry = {"direction": "in", "dst": orig.saddr, "dport": reply.sport or 0,
                         "tx_bytes": received, "rx_bytes": sent}
            else:
                continue
            found.append({"proto": _PROTOCOLS.get(orig.proto, str(orig.proto)), **entry,
                          "state": _state(message)})
    finally:
        ct.close()
    return sorted(found, key=lambda c: (c["direction"], c["dst"], c["dport"])), budget.cut


def forget_connections_soon(jail_address: str) -> None:
    """Delete every conntrack entry of the jail, from a thread of its own.

    Called at teardown, so no later jail on the same address inherits them
    (and no late packet of theirs is NATed to it). Teardown does not wait:
    walking the conntrack table costs ~10 ms however few entries are the
    jail's, and the pool holds the address back (pool.QUARANTINE_S) far
    longer than this takes.
    """
    threading.Thread(target=_forget_connections, args=(jail_address,), name="conntrack", daemon=True).start()


def _forget_connections(jail_address: str) -> None:
    """Opened by the jail (original source), or to it through a published port (reply source)."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    ct = Conntrack()
    try:
        theirs = []
        for message in ct.dump():
            family = message["nfgen_family"]
            if family != socket.AF_INET:
                continue
            tuples = [NFCTAttrTuple.from_netlink(family, message.get_attr(attr))
                      for attr in ("CTA_TUPLE_ORIG", "CTA_TUPLE_REPLY")]
            if jail_address in (tuples[0].saddr, tuples[1].saddr):
                theirs.append(tuples[0])
        for entry in theirs:
            try:
                _delete(ct, entry)
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:  # ended meanwhile
                    log.warning("conntrack: could not forget a connection of %s: %s", jail_address, exc)
    except Exception:
        log.exception("conntrack: could not forget the connections of %s", jail_address)
    finally:
        ct.close()


def _bytes(message, attr: str) -> int:
    counters = message.get_attr(attr)
    return int(counters.get_attr("CTA_COUNTERS_BYTES") or 0) if counters else 0


def _delete(ct, entry) -> None:
    """ct.delete(entry). pyroute2 0.7's (Debian 12 and 13) sends the request, then iterates over
    the reply it did not keep: a TypeError there comes after the kernel deleted the entry
    (a refusal raises NetlinkError before)."""
    try:
        ct.delete(entry)
    except TypeError:
        pass


def _state(message) -> str:
    protoinfo = message.get_attr("CTA_PROTOINFO")
    tcp = protoinfo.get_attr("CTA_PROTOINFO_TCP") if protoinfo else None
    if tcp is not None:
        return TCP_STATES.get(tcp.get_attr("CTA_PROTOINFO_TCP_STATE"), "UNKNOWN")
    status = message.get_attr("CTA_STATUS") or 0
    if status & _IPS_ASSURED:
        return "ASSURED"
    return "REPLIED" if status & _IPS_SEEN_REPLY else "UNREPLIED"
