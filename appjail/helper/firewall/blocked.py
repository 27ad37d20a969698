"""What a jail's rules refused, per destination: (protocol, address, port, reason).

Each backend records blocked destinations its own way (nftables: a set per
jail whose elements the kernel counts; x_tables: NFLOG, aggregated here in a
`BlockedTable`); both answer with `Blocked` entries, at most BLOCKED_MAX per
jail. Times are whole seconds since the epoch (the bus carries no floats).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

BLOCKED_MAX = 1000  # entries per jail, kernel set or helper table alike
BLOCKED_TIMEOUT_S = 3600  # an entry not hit for this long goes
SHOWN = 40  # entries in an Inspect answer: the most hit first

Key = tuple[str, str, int, str]  # proto, dst, dport, reason
PORT_PROTOCOLS = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "udplite"}
PROTOCOLS = {1: "icmp", 2: "igmp", 47: "gre", 50: "esp", **PORT_PROTOCOLS}


def protocol_name(number: int) -> str:
    return PROTOCOLS.get(number, str(number))


class Blocked(NamedTuple):
    proto: str
    dst: str
    dport: int
    reason: str
    packets: int
    bytes: int
    first: int
    last: int

    @property
    def key(self) -> Key:
        return self.proto, self.dst, self.dport, self.reason


def top(entries: Iterable[Blocked], count: int = SHOWN) -> list[Blocked]:
    """The most hit entries first; among equals the most recent."""
    return sorted(entries, key=lambda b: (-b.packets, -b.last, b.key))[:count]


def oldest(entries: Iterable[Blocked], count: int) -> list[Blocked]:
    """The `count` entries hit least recently: what makes room in a full table."""
    return sorted(entries, key=lambda b: (b.last, b.packets))[:count]


class FirstSeen:
    """When the helper first saw each entry of a kernel table that keeps no such time.

    An entry new to the helper gets its last hit as its first; entries the
    kernel no longer has are forgotten at the next look, so this holds at
    most what the kernel holds.
    """

    def __init__(self) -> None:
        self._seen: dict[str, dict[Key, int]] = {}

    def stamp(self, jail: str, entries: Iterable[Blocked]) -> list[Blocked]:
        earlier = self._seen.get(jail, {})
        stamped = [entry._replace(first=min(earlier.get(entry.key, entry.last), entry.last))
                   for entry in entries]
        self._seen[jail] = {entry.key: entry.first for entry in stamped}
        return stamped

    def forget(self, jail: str) -> None:
        self._seen.pop(jail, None)


class BlockedTable:
    """Per jail at most `size` entries, the least recently hit going first (thread-safe)."""

    def __init__(self, size: int = BLOCKED_MAX) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._jails: dict[str, OrderedDict[Key, list[int]]] = {}

    def hit(self, jail: str, key: Key, length: int, now: int) -> None:
        with self._lock:
            entries = self._jails.setdefault(jail, OrderedDict())
            counts = entries.get(key)
            if counts is None:
                if len(entries) >= self.size:
                    entries.popitem(last=False)
                entries[key] = [1, length, now, now]
                return
            counts[0] += 1
            counts[1] += length
            counts[3] = now
            entries.move_to_end(key)

    def entries(self, jail: str, now: int) -> list[Blocked]:
        """The jail's entries hit within BLOCKED_TIMEOUT_S (older ones go now)."""
        with self._lock:
            entries = self._jails.get(jail, OrderedDict())
            while entries and next(iter(entries.values()))[3] < now - BLOCKED_TIMEOUT_S:
                entries.popitem(last=False)
            return [Blocked(*key, *counts) for key, counts in entries.items()]

    def forget(self, jail: str) -> None:
        with self._lock:
            self._jails.pop(jail, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._jails.values())
