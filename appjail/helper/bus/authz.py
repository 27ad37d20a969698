"""Who is calling, and may they: the bus daemon and polkit, nothing else.

The caller's identity comes from the bus daemon (GetConnectionCredentials of
the unique sender name), never from an argument: uid and groups, and the
process, whose network namespace tells whether it runs on the host, inside a
jail, or elsewhere (refused: policy.confine). Authorisation asks polkit
about the `system-bus-name` subject, so polkit itself resolves the name to a
process and user at check time; a caller that has already gone away, a
polkit that does not answer, or any error at all, is a refusal.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
from collections.abc import Callable

import dbus

from ..kernel import launch
from ..kernel.netns import process_netns
from .policy import Caller

log = logging.getLogger(__name__)

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_INTERFACE = "org.freedesktop.PolicyKit1.Authority"
_ALLOW_USER_INTERACTION = 1
# polkit waits up to minutes for a password; the call must outlive that
_CHECK_TIMEOUT = 300.0


class CallerUnknown(Exception):
    """The bus cannot say who sent the message (it disconnected, or lied)."""


def identify(bus: dbus.Bus, sender: str) -> Caller:
    """Uid, gid and groups of a bus connection, as the bus daemon saw them, and its process.

    The process is the one the bus daemon names (never an argument), read
    once while one pidfd pins it: its network namespace (is it inside a
    jail?) and its umask, limits and loginuid (for a program it launches).
    If it ended meanwhile its pid may be another's: then it is unknown.
    """
    try:
        credentials = bus.call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionCredentials", "s", (sender,), timeout=10)
        uid = int(credentials["UnixUserID"])
        entry = pwd.getpwuid(uid)
        pid = int(credentials["ProcessID"])
        pidfd = os.pidfd_open(pid)
        try:
            netns, ours = process_netns(pid)
            context = launch.read_process_context(pid, uid)
            signal.pidfd_send_signal(pidfd, 0)  # still the process the pidfd pinned
        finally:
            os.close(pidfd)
    except (dbus.DBusException, KeyError, ValueError, OSError) as exc:
        raise CallerUnknown(f"cannot identify {sender}: {exc}") from None
    groups = credentials.get("UnixGroupIDs")
    if groups is None:
        groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return Caller(uid, entry.pw_gid, tuple(int(g) for g in groups), sender, netns=netns,
                  netns_ours=ours, context=context)


class Authority:
    """Asynchronous polkit checks, so one user's password prompt blocks no one."""

    def __init__(self, bus: dbus.Bus) -> None:
        self.bus = bus

    def check(self, sender: str, action: str, interactive: bool,
              done: Callable[[bool], None]) -> None:
        """Call done(True) only when polkit says yes for this sender and action."""
        subject = dbus.Struct((dbus.String("system-bus-name"),
                               dbus.Dictionary({"name": dbus.String(sender, variant_level=1)},
                                               signature="sv")), signature=None)

        def on_reply(result) -> None:
            is_authorized = bool(result[0])
            if not is_authorized:
                log.info("polkit refused %s to %s", action, sender)
            done(is_authorized)

        def on_error(exc: Exception) -> None:
            log.warning("polkit check of %s for %s failed: %s", action, sender, exc)
            done(False)

        try:
            self.bus.call_async(
                POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE, "CheckAuthorization",
                "(sa{sv})sa{ss}us",
                (subject, action, dbus.Dictionary({}, signature="ss"),
                 dbus.UInt32(_ALLOW_USER_INTERACTION if interactive else 0), ""),
                on_reply, on_error, timeout=_CHECK_TIMEOUT)
        except dbus.DBusException as exc:
            on_error(exc)
