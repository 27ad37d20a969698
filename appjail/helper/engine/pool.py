"""Addressing: which /30 of the pool a jail gets, and which routing table.

A freed /30 is held back for QUARANTINE_S seconds before it is handed out
again: packets still in flight to a torn-down jail's address (late replies,
retransmissions of its peers) must not reach the next jail, which may be
another user's. The engine also deletes the jail's conntrack entries at
teardown; the quarantine covers what arrives after that. It is kept in the
helper's memory: a restarted helper holds back the addresses of the jails
it found recorded and did not adopt, from then on.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DEFAULT_POOL = "10.231.0.0/16"
SUBNET_PREFIX = 30
# Per-jail routing tables are TABLE_BASE + slot; reconcile treats the whole
# range as ours. Policy rules all share one priority, ahead of `main` (32766)
# and of wg-quick's rules (32764/32765).
TABLE_BASE = 23_100_000
RULE_PRIORITY = 10_231
QUARANTINE_S = 60.0


class PoolExhausted(RuntimeError):
    """No free /30 is left in the pool."""


@dataclass(frozen=True)
class JailAddressing:
    slot: int
    network: ipaddress.IPv4Network

    @property
    def host_address(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def jail_address(self) -> str:
        return str(self.network.network_address + 2)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def table(self) -> int:
        return TABLE_BASE + self.slot


class AddressPool:
    """Hands out /30 networks from a pool, skipping anything the host routes."""

    def __init__(self, pool: str = DEFAULT_POOL, quarantine: float = QUARANTINE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.network = ipaddress.IPv4Network(pool, strict=True)
        if self.network.prefixlen > SUBNET_PREFIX:
            raise ValueError(f"address pool {pool} is smaller than one /{SUBNET_PREFIX}")
        self.size = 2 ** (SUBNET_PREFIX - self.network.prefixlen)
        self.quarantine = quarantine
        self._clock = clock
        self._freed: dict[int, float] = {}  # slot -> when its jail went away

    def release(self, slot: int) -> None:
        """The jail of `slot` is gone: hold the slot back for the quarantine."""
        self._freed[slot] = self._clock()

    def addressing(self, slot: int) -> JailAddressing:
        if not 0 <= slot < self.size:
            raise ValueError(f"slot {slot} is outside the pool {self.network}")
        base = int(self.network.network_address) + slot * 4
        return JailAddressing(slot, ipaddress.IPv4Network((base, SUBNET_PREFIX)))

    def slot_of(self, network: ipaddress.IPv4Network) -> int:
        return (int(network.network_address) - int(self.network.network_address)) // 4

    def allocate(self, used_slots: Iterable[int],
                 host_routes: Iterable[ipaddress.IPv4Network]) -> JailAddressing:
        """The lowest free slot whose /30 overlaps no route of the host.

        host_routes must not include the jails' own routes (their slots are
        in used_slots); a default route (/0) never counts as a collision.
        Slots freed less than `quarantine` seconds ago count as used.
        """
        now = self._clock()
        self._freed = {slot: freed for slot, freed in self._freed.items()
                       if now - freed < self.quarantine}
        taken = set(used_slots) | set(self._freed)
        blocking = [r for r in host_routes if r.prefixlen > 0 and r.overlaps(self.network)]
        for slot in range(self.size):
            if slot in taken:
                continue
            candidate = self.addressing(slot)
            if not any(candidate.network.overlaps(route) for route in blocking):
                return candidate
        held_back = f" ({len(self._freed)} held back for {self.quarantine:g} s after use)" if self._freed else ""
        raise PoolExhausted(f"no free /{SUBNET_PREFIX} left in {self.network}{held_back}")
