"""Which firewall backend this host gets, and why; opening one.

nftables, unless the host's `iptables` command is the legacy build or legacy
tables are already in use in this namespace (the choice Incus and libvirt
make: rules of both kinds on one host confuse admins, and kernels since 6.17
may lack legacy x_tables altogether). The setting (`--firewall`, or
APPJAIL_FIREWALL for a unit file or a test run) overrides it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from . import backends
from .backends import FirewallBackend

AUTO = "auto"
NFTABLES, XTABLES = "nftables", "xtables"
BACKENDS = (NFTABLES, XTABLES)
SETTING_ENV = "APPJAIL_FIREWALL"


class UnknownBackend(ValueError):
    """The setting names no backend."""


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
    tables = backends.legacy_tables()
    if tables is None:
        return Choice(NFTABLES, "this kernel has no legacy x_tables")
    if iptables_build() == "legacy":
        return Choice(XTABLES, "the host's iptables command is the legacy build")
    if tables:
        return Choice(XTABLES, "legacy x_tables tables are in use here (" + ", ".join(tables) + ")")
    return Choice(NFTABLES, "the host's iptables is the nft build and no legacy tables are in use")


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
