"""Each launched program in a transient scope of its user's slice, where systemd runs.

A program the helper forks starts in the helper's own cgroup: the caller's
logout would not reach it, and its processes would count against the
helper's task limit, not the user's. Where systemd owns
org.freedesktop.systemd1 on the helper's bus, the helper asks it
(Manager.StartTransientUnit, as `systemd-run --scope` does) for a scope
`appjail-PID-RANDOM.scope` in `user-UID.slice` holding the child,
while the child still waits at its gate (launch.py): its program is in the
scope from its first instruction. The job is done when systemd says so
(JobRemoved, "done"): only then has the child moved. Every user may list
every unit with its description (systemctl), so neither names the jail:
a jail's name is its owner's business (README).

Nothing here waits: the call is asynchronous, and the launch deadline
(supervisor.py) covers a systemd that does not answer. Without systemd on
the bus the helper launches unscoped, and `appjail doctor` says so.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import dbus

log = logging.getLogger(__name__)

SYSTEMD_NAME = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
# StartTransientUnit(name, mode, properties, auxiliary units)
START_SIGNATURE = "ssa(sv)a(sa(sv))"
CALL_TIMEOUT = 10.0  # seconds; the launch deadline answers first anyway

Placed = Callable[[str | None], None]  # None: in the scope; else why not, one sentence


def scope_name(pid: int, token: str | None = None) -> str:
    """`appjail-PID-TOKEN.scope`: a scope outlives its first process while others
    remain in it, so the pid alone could name a live scope again."""
    return f"appjail-{pid}-{token or secrets.token_hex(4)}.scope"


def scope_description(program: bytes) -> str:
    """`appjail: PROGRAM`, valid UTF-8 (as D-Bus strings must be) whatever the program's name."""
    return "appjail: " + program.decode(errors="replace")


def scope_properties(uid: int, pid: int, description: str) -> dbus.Array:
    """The scope's unit properties: `pid` in the caller's `user-UID.slice`.

    CollectMode: a scope whose program was killed (a limit, a logout) goes
    away too instead of staying behind as failed.
    """
    return dbus.Array([
        ("PIDs", dbus.Array([dbus.UInt32(pid)], signature="u")),
        ("Slice", dbus.String(f"user-{uid}.slice")),
        ("Description", dbus.String(description)),
        ("CollectMode", dbus.String("inactive-or-failed")),
    ], signature="(sv)")


class Scopes:
    """Scopes for launched programs while systemd is on the bus, from the main loop."""

    def __init__(self, bus: dbus.Bus) -> None:
        self.bus = bus
        self._jobs: dict[str, Placed] = {}  # job path -> whom to tell when it is done
        self.available = bool(bus.name_has_owner(SYSTEMD_NAME))
        bus.watch_name_owner(SYSTEMD_NAME, self._owner_changed)
        bus.add_signal_receiver(self._job_removed, "JobRemoved", MANAGER_INTERFACE,
                                SYSTEMD_NAME, SYSTEMD_PATH)
        log.info("systemd %s: programs go %s", "runs" if self.available else "does not run",
                 "into scopes of their users' slices" if self.available else "unscoped")

    def place(self, uid: int, pid: int, program: bytes, done: Placed) -> None:
        """Ask for a scope in `uid`'s slice holding `pid`, which runs `program`; done(None) once it holds it."""
        name = scope_name(pid)

        def queued(job: str) -> None:
            self._jobs[str(job)] = done

        def refused(error: dbus.DBusException) -> None:
            done(f"systemd did not make scope {name} for the program: {error.get_dbus_message()}")

        self.bus.call_async(SYSTEMD_NAME, SYSTEMD_PATH, MANAGER_INTERFACE, "StartTransientUnit",
                            START_SIGNATURE, (name, "fail", scope_properties(uid, pid, scope_description(program)),
                                              dbus.Array([], signature="(sa(sv))")),
                            queued, refused, timeout=CALL_TIMEOUT)

    def _job_removed(self, _job_id: int, job: str, unit: str, result: str) -> None:
        # systemd answers the call before the job runs: the path is known by now
        done = self._jobs.pop(str(job), None)
        if done is not None:
            done(None if result == "done" else f"systemd could not start scope {unit} for the "
                                               f"program: job {result}")

    def _owner_changed(self, owner: str) -> None:
        self.available = bool(owner)
        if not owner:  # its jobs will never end now
            waiting, self._jobs = self._jobs, {}
            for done in waiting.values():
                done("systemd left the bus before the program was in its scope")
