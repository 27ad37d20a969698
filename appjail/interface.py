"""The D-Bus contract between the helper and its clients: names, method signatures, errors, exit codes.

Imported by both sides, so it imports nothing of appjail (no dbus, no privileged code).
"""

from __future__ import annotations

from collections import namedtuple

BUS_NAME = "org.appjail.Helper1"
OBJECT_PATH = "/org/appjail/Helper1"
INTERFACE = "org.appjail.Helper1"

ERROR_PREFIX = "org.appjail.Error."
ERROR_NOT_AUTHORIZED = ERROR_PREFIX + "NotAuthorized"
ERROR_INVALID_ARGUMENT = ERROR_PREFIX + "InvalidArgument"
ERROR_NOT_FOUND = ERROR_PREFIX + "NotFound"
ERROR_CONFLICT = ERROR_PREFIX + "Conflict"
ERROR_PROGRAM_NOT_FOUND = ERROR_PREFIX + "ProgramNotFound"
ERROR_NOT_EXECUTABLE = ERROR_PREFIX + "NotExecutable"
ERROR_LIMIT_REACHED = ERROR_PREFIX + "LimitReached"  # the caller has as many jails (calls, launches) as one user may
ERROR_FAILED = ERROR_PREFIX + "Failed"

# A program that did not start ends as a shell's would (the client exits with these)
EXIT_SETUP_FAILED = 125  # appjail itself failed
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
# the error a launch that failed with an exit code is answered with, and back
EXIT_ERRORS: dict[int, str] = {EXIT_NOT_FOUND: ERROR_PROGRAM_NOT_FOUND, EXIT_NOT_EXECUTABLE: ERROR_NOT_EXECUTABLE}
ERROR_EXITS: dict[str, int] = {name: code for code, name in EXIT_ERRORS.items()}

ACTION_RUN = "org.appjail.run"
ACTION_INSPECT = "org.appjail.inspect"
ACTION_MANAGE = "org.appjail.manage"
ACTIONS = (ACTION_RUN, ACTION_INSPECT, ACTION_MANAGE)

# A method: the polkit action it needs, its D-Bus signatures in and out, its arguments' names.
Method = namedtuple("Method", "action in_signature out_signature params")

# Every method of the interface. The helper refuses to export a method missing
# from this table (deny by default). Acting on another user's jail needs
# ACTION_MANAGE in addition.
METHODS: dict[str, Method] = {
    "Run": Method(ACTION_RUN, "a{sv}aayaayayah", "suh", ("options", "argv", "env", "cwd", "fds")),
    "Signal": Method(ACTION_RUN, "ui", "", ("pid", "signal")),
    "Stop": Method(ACTION_RUN, "s", "", ("name",)),
    "List": Method(ACTION_INSPECT, "", "aa{sv}", ()),
    "Inspect": Method(ACTION_INSPECT, "s", "a{sv}", ("name",)),
    "WhoAmI": Method(ACTION_INSPECT, "", "a{sv}", ()),
    "Reload": Method(ACTION_MANAGE, "", "a{sv}", ()),  # re-read /etc/appjail/jails.d: root's declared jails
}
METHOD_ACTIONS: dict[str, str] = {name: method.action for name, method in METHODS.items()}

SIGNALS = ("JailAdded", "JailRemoved", "VpnChanged")
