"""`appjail service NAME UNIT`: a systemd service that runs inside root's jail NAME, or not at all.

It writes the drop-in UNIT.d/appjail.conf (in /etc/systemd/system), which
puts the service into the jail's network namespace (NetworkNamespacePath=),
binds the jail's resolv.conf and nsswitch.conf over the host's (as a launch
does, kernel/launch.py), hides nscd's and avahi's sockets (host daemons that
would look names up outside), and binds the service to
appjail-jail@KERNEL.service (jailunit.py): that unit waits for the jail's
namespace, is up while it exists and ends when it goes, so the service
stops with the jail and does not start without it; NetworkNamespacePath=
on a missing path fails the start as well. The template unit starts the
helper (which makes the declared jails) first.

Root only (it writes into /etc); a pure module but for the files it writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from .model import ValidationError, validate_name

UNIT_DIR = Path("/etc/systemd/system")
DROP_IN = "appjail.conf"
NETNS_DIR = "/run/netns"
ETC_NETNS = "/etc/netns"  # the jail's resolver files: kernel/resolv.py
RESOLVER_FILES = ("resolv.conf", "nsswitch.conf")  # bound over /etc's, as kernel/launch.py binds them
# host daemons a program's lookups would reach by socket whatever nsswitch.conf says (launch.HIDDEN_DIRS;
# /run/systemd/resolve is left out: nsswitch.conf no longer names resolve, and /etc/resolv.conf may link there)
HIDDEN_DIRS = ("/run/nscd", "/run/avahi-daemon")
JAIL_UNIT = "appjail-jail@{}.service"
_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.@-")
UNIT_MAX = 255


def validate_unit(unit: str) -> str:
    """A service's unit name (`.service` added when it has no suffix); never a path, never a template."""
    if "." not in unit:
        unit += ".service"
    if not (0 < len(unit) <= UNIT_MAX and set(unit) <= _UNIT_CHARS and unit.endswith(".service")
            and not unit.startswith((".", "-")) and "@.service" not in unit
            and not unit.startswith("appjail-jail@")):
        raise ValidationError(f"invalid unit {unit!r}: expected a service's name such as qbittorrent-nox.service "
                              "(not a template, not appjail's own)")
    return unit


def escape(name: str) -> str:
    """A kernel name as systemd escapes it in a unit name (systemd-escape): '-' is \\x2d."""
    return name.replace("-", "\\x2d")


def jail_unit(kernel_name: str) -> str:
    """The unit that stands for the jail whose namespace is /run/netns/KERNEL_NAME."""
    return JAIL_UNIT.format(escape(kernel_name))


def drop_in(name: str, kernel_name: str) -> str:
    """The drop-in's text for a service inside root's jail NAME (kernel name KERNEL_NAME)."""
    validate_name(name)
    jail = jail_unit(kernel_name)
    binds = " ".join(f"{ETC_NETNS}/{kernel_name}/{file}:/etc/{file}" for file in RESOLVER_FILES)
    return "\n".join([
        f"# Written by `appjail service {name} UNIT`: this service runs inside appjail's jail {name} (root's)",
        "# or not at all; `appjail service --remove UNIT` takes it out again.",
        "[Unit]",
        f"BindsTo={jail}",
        f"After={jail}",
        "",
        "[Service]",
        f"NetworkNamespacePath={NETNS_DIR}/{kernel_name}",
        f"BindReadOnlyPaths={binds}",
        "InaccessiblePaths=" + " ".join(f"-{path}" for path in HIDDEN_DIRS),
        ""])


def drop_in_path(unit: str, unit_dir: Path = UNIT_DIR) -> Path:
    return unit_dir / f"{validate_unit(unit)}.d" / DROP_IN


def write_drop_in(name: str, kernel_name: str, unit: str, unit_dir: Path = UNIT_DIR) -> Path:
    """Write UNIT's drop-in (replacing appjail's earlier one) atomically; its path."""
    path = drop_in_path(unit, unit_dir)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    staged = path.with_name(f".{DROP_IN}.new")
    staged.write_text(drop_in(name, kernel_name))
    staged.chmod(0o644)
    os.replace(staged, path)
    return path


def remove_drop_in(unit: str, unit_dir: Path = UNIT_DIR) -> Path | None:
    """Remove UNIT's drop-in (and its directory, left empty); its path, None when there was none."""
    path = drop_in_path(unit, unit_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    try:
        path.parent.rmdir()
    except OSError:
        pass  # other drop-ins of the administrator's
    return path
