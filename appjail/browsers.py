"""Single-instance programs: Firefox, Thunderbird and Chromium hand a new
window or link to a copy already running with the same profile, through the
desktop (X11, D-Bus) or a socket in the profile, which a jail shares. A
jailed launch would then open it in the copy outside the jail, unjailed.

A running copy is known by the lock it holds in its profile directory:
Mozilla's `lock` symlink (-> "IP:+PID") and Chromium's SingletonLock (->
"HOST-PID", beside the SingletonSocket a second launch hands off through).
`run` refuses such a launch and says how to give the jail a profile of its
own; `profiles add` gives each profile of a browser one.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # every `appjail run` imports this module: nothing slow (pathlib, dataclasses) at start
if TYPE_CHECKING:
    from pathlib import Path


class Family(namedtuple("Family", "roots lock separate own_profile")):
    """roots: profile directories below HOME (Chromium's) or their parents (Mozilla's); lock: the
    symlink a running copy holds in its profile directory; separate: arguments that choose another
    profile, or forbid the hand-off; own_profile(DIR): the arguments for a profile of the jail's own."""

    def suggestion(self) -> str:
        return " ".join(self.own_profile("DIR"))


MOZILLA_SEPARATE = frozenset({"--new-instance", "-new-instance", "--no-remote", "-no-remote",
                              "--profile", "-profile", "-P", "--P"})
FIREFOX = Family((".mozilla/firefox", ".config/mozilla/firefox", "snap/firefox/common/.mozilla/firefox"),
                 "lock", MOZILLA_SEPARATE,
                 lambda directory: ["--profile", directory])
THUNDERBIRD = Family((".thunderbird", ".config/mozilla/thunderbird"), "lock", MOZILLA_SEPARATE,
                     FIREFOX.own_profile)
CHROMIUM_SEPARATE = frozenset({"--user-data-dir"})


def _chromium(*roots: str) -> Family:
    return Family(roots, "SingletonLock", CHROMIUM_SEPARATE, lambda directory: [f"--user-data-dir={directory}"])


FAMILIES: dict[str, Family] = {
    "firefox": FIREFOX, "firefox-esr": FIREFOX, "firefox-bin": FIREFOX,
    "thunderbird": THUNDERBIRD,
    "chromium": _chromium(".config/chromium", "snap/chromium/common/chromium"),
    "chromium-browser": _chromium(".config/chromium", "snap/chromium/common/chromium"),
    "google-chrome": _chromium(".config/google-chrome"), "google-chrome-stable": _chromium(".config/google-chrome"),
    "brave-browser": _chromium(".config/BraveSoftware/Brave-Browser"),
}


def family_of(command: Sequence[str]) -> Family | None:
    return FAMILIES.get(os.path.basename(command[0])) if command else None


def separates(family: Family, args: Sequence[str]) -> bool:
    """Whether the arguments already choose another profile (or forbid the hand-off)."""
    return any(arg.split("=", 1)[0] in family.separate for arg in args)


def running_copies(family: Family, home: str, alive: Callable[[int], bool]) -> list[tuple[str, int]]:
    """(profile directory, pid) of each copy holding a lock below the family's roots."""
    copies = []
    for root in family.roots:
        base = os.path.join(home, root)
        try:
            candidates = [base, *(entry.path for entry in os.scandir(base) if entry.is_dir())]
        except OSError:
            continue
        for directory in candidates:
            if (pid := lock_pid(os.path.join(directory, family.lock))) is not None and alive(pid):
                copies.append((directory, pid))
    return copies


def lock_pid(lock: str) -> int | None:
    """The pid a lock symlink names at its end ("127.0.0.1:+4242", "host-4242"); None without one."""
    try:
        target = os.readlink(lock)
    except OSError:
        return None
    digits = len(target) - len(target.rstrip("0123456789"))
    return int(target[-digits:]) if digits else None


def pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def refusal(command: Sequence[str], home: str, alive: Callable[[int], bool] = pid_alive) -> str | None:
    """Why `command` must not start in a jail now (a copy outside would take its work), or None."""
    family = family_of(command)
    if family is None or separates(family, command[1:]):
        return None
    copies = running_copies(family, home, alive)
    if not copies:
        return None
    program = os.path.basename(command[0])
    directory, pid = copies[0]
    return (f"{program} already runs with profile {directory} (pid {pid}) and would open this in that copy, "
            f"wherever it runs (unjailed, or in another jail); close it, or give this jail a profile of its own: "
            f"appjail run ... -- {program} {family.suggestion()} (`appjail profiles add NAME --from {program}` "
            f"makes one)")


def own_profile_args(command: Sequence[str], directory: Path) -> list[str]:
    """The arguments that give `command` its own profile in `directory` ([] when it needs none or
    already has one); the directory is made, for the user alone."""
    family = family_of(command)
    if family is None or separates(family, command[1:]):
        return []
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return family.own_profile(str(directory))
