"""The firewall seam: what the engine asks of netfilter, and which backend does it.

Two backends carry the same rules (built in `rules`): x_tables through
python-iptables (`firewall_xt`) and nftables through libnftables' own Python
binding (`firewall_nft`). The helper picks one at start (`choose`): nftables,
unless the host's `iptables` command is the legacy build or legacy tables are
already in use in this namespace (the choice Incus and libvirt make: rules of
both kinds on one host confuse admins, and kernels since 6.17 may lack legacy
x_tables altogether). The setting (`--firewall`, or APPJAIL_FIREWALL for a
unit file or a test run) overrides it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .blocked import Blocked
from .rules import JailRules

AUTO = "auto"
NFTABLES, XTABLES = "nftables", "xtables"
BACKENDS = (NFTABLES, XTABLES)
SETTING_ENV = "APPJAIL_FIREWALL"
LEGACY_TABLES = "/proc/thread-self/net/ip_tables_names"

# (packets, bytes) per role, per jail
Counters = dict[str, dict[str, tuple[int, int]]]


class FirewallError(RuntimeError):
    """A netfilter change could not be made."""


class UnknownBackend(ValueError):
    """The setting names no backend."""


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


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose(setting: str | None = None) -> Choice:
    """The backend for this host, and why (for the helper's log and `doctor`)."""
    setting = setting or os.environ.get(SETTING_ENV) or AUTO
    if setting != AUTO:
        if setting not in BACKENDS:
            raise UnknownBackend(f"unknown firewall backend {setting!r}: choose "
                                 f"{', '.join((AUTO, *BACKENDS))}")
        return Choice(setting, "set by the firewall setting")
    tables = legacy_tables()
    if tables is None:
        return Choice(NFTABLES, "this kernel has no legacy x_tables")
    if iptables_build() == "legacy":
        return Choice(XTABLES, "the host's iptables command is the legacy build")
    if tables:
        return Choice(XTABLES, "legacy x_tables tables are in use here (" + ", ".join(tables) + ")")
    return Choice(NFTABLES, "the host's iptables is the nft build and no legacy tables are in use")


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


def iptables_build() -> str | None:
    """'legacy' or 'nft': which build the host's `iptables` command is; None without one."""
    path = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
    if path is None:
        return None
    return "legacy" if "legacy" in os.path.basename(os.path.realpath(path)) else "nft"


def other_backends(name: str) -> list[FirewallBackend]:
    """The backends other than NAME that this host can open (reconcile sweeps them too)."""
    found = []
    for other in BACKENDS:
        if other != name:
            try:
                found.append(open_backend(other))
            except (ImportError, OSError):  # its library is not installed here
                continue
    return found


def open_backend(name: str) -> FirewallBackend:
    if name == NFTABLES:
        from .nft import NftablesBackend

        return NftablesBackend()
    if name == XTABLES:
        from .xt import XtablesBackend

        return XtablesBackend()
    raise UnknownBackend(f"unknown firewall backend {name!r}")
