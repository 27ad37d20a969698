"""The D-Bus contract between the helper and its clients: names only.

Imported by both sides, so it imports nothing (no dbus, no privileged code).
"""

from __future__ import annotations

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

ACTION_RUN = "org.appjail.run"
ACTION_INSPECT = "org.appjail.inspect"
ACTION_MANAGE = "org.appjail.manage"
ACTIONS = (ACTION_RUN, ACTION_INSPECT, ACTION_MANAGE)

# Every method of the interface and the polkit action it needs. The helper
# refuses to export a method missing from this table (deny by default).
# Acting on another user's jail needs ACTION_MANAGE in addition.
METHOD_ACTIONS: dict[str, str] = {
    "Run": ACTION_RUN,
    "Signal": ACTION_RUN,
    "Stop": ACTION_RUN,
    "List": ACTION_INSPECT,
    "Inspect": ACTION_INSPECT,
    "WhoAmI": ACTION_INSPECT,
    "Reload": ACTION_MANAGE,  # re-read /etc/appjail/jails.d: root's declared jails
}

SIGNALS = ("JailAdded", "JailRemoved", "VpnChanged")
