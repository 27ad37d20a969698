"""Single-instance programs (Firefox, Chromium) hand a new window to a copy
already running outside the jail, and the jail then holds nothing. `run`
warns when that is about to happen and says how to get a separate copy."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

# program -> (arguments that make a separate instance, what to suggest)
SINGLE_INSTANCE: dict[str, tuple[tuple[str, ...], str]] = {
    "firefox": (("--new-instance", "--no-remote", "-no-remote", "--profile", "-profile", "-P"),
                "--new-instance -P PROFILE"),
    "firefox-esr": (("--new-instance", "--no-remote", "-no-remote", "--profile", "-profile", "-P"),
                    "--new-instance -P PROFILE"),
    "chromium": (("--user-data-dir",), "--user-data-dir=DIR"),
    "google-chrome": (("--user-data-dir",), "--user-data-dir=DIR"),
}


def own_process_names(uid: int, proc: str = "/proc") -> set[str]:
    """The command names (comm) of the processes `uid` runs."""
    names = set()
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                with open(os.path.join(entry.path, "comm")) as comm:
                    names.add(comm.read().strip())
        except OSError:
            continue  # gone meanwhile
    return names


def single_instance_warning(program: str, args: Sequence[str],
                            running: Callable[[], Iterable[str]]) -> str | None:
    """A warning when `program` would hand its work to a copy already running.

    running() lists the caller's process names; it is asked only for the programs concerned.
    """
    name = os.path.basename(program)
    if name not in SINGLE_INSTANCE:
        return None
    separate, suggestion = SINGLE_INSTANCE[name]
    if any(arg.split("=", 1)[0] in separate for arg in args):
        return None
    # comm is cut at 15 characters
    if not any(name.startswith(comm) or comm.startswith(name) for comm in running() if comm):
        return None
    return (f"{name} is already running outside the jail and may open this window there instead; "
            f"close it, or start a separate instance: appjail run ... -- {name} {suggestion}")
