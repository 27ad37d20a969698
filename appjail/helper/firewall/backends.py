"""What every firewall backend is: the protocol the engine asks of netfilter, its errors and results.

Two backends carry the same rules (built in `rules`): x_tables through
python-iptables (`xt`) and nftables through libnftables' own Python binding
(`nft`); `choice` picks one for this host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .blocked import Blocked
from .rules import JailRules

LEGACY_TABLES = "/proc/thread-self/net/ip_tables_names"

# (packets, bytes) per role, per jail
Counters = dict[str, dict[str, tuple[int, int]]]


class FirewallError(RuntimeError):
    """A netfilter change could not be made."""


@dataclass
class Residue:
    """What a sweep removed: owners of shared-chain rules, and chains."""

    owners: set[str] = field(default_factory=set)
    chains: set[str] = field(default_factory=set)


class FirewallBackend(Protocol):
    """Everything the engine does with netfilter."""

    name: str

    def install(self, rules: JailRules) -> None:
        """The jail's chain and its hooks, in one transaction."""

    def remove(self, rules: JailRules) -> None:
        """The jail's hooks and chain; what is already gone is no error."""

    def set_guard(self, forwarding_ifnames: Iterable[str] | None) -> None:
        """Install (or with None remove) the forwarding guard, replacing any old one."""

    def sweep(self, live_owners: set[str]) -> Residue:
        """Remove every aj-* rule and chain whose owner is not in live_owners."""

    def read_counters(self, layouts: Mapping[str, Sequence[str]]) -> Counters:
        """(packets, bytes) per role for each jail whose chain exists (see rules.JailRules.roles)."""

    def read_blocked(self, name: str, now: int) -> list[Blocked]:
        """The jail's blocked destinations (at most blocked.BLOCKED_MAX); now: epoch seconds."""

    def list_owned(self) -> tuple[set[str], set[str]]:
        """(owners of tagged rules, aj-* chains and sets): what a leak check looks at."""

    def damaged(self, expected: Sequence[JailRules], guard: bool) -> Damage:
        """What of the expected jails' rules (and with guard, the guard) is not all in place."""


@dataclass
class Damage:
    """Owners (jail chains, the guard) whose rules are incomplete; shared: the parts all jails
    share are damaged too, so everything is to be removed and made again."""

    owners: set[str] = field(default_factory=set)
    shared: bool = False


def legacy_tables() -> list[str] | None:
    """The legacy x_tables tables that exist in this namespace; None without x_tables.

    Read from /proc, so looking creates nothing (opening a table with
    libiptc would instantiate it).
    """
    try:
        with open(LEGACY_TABLES) as names:
            return sorted(names.read().split())
    except FileNotFoundError:
        return None
