"""Typed access to appjail-helper over the system bus, for the CLI and the tray.

Unprivileged: it speaks the bus protocol itself (dbuswire), imports nothing
of the helper, and loads in a few milliseconds. The bus is the one in
DBUS_SYSTEM_BUS_ADDRESS, else the system bus.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Sequence

from . import interface as api
from .dbuswire import Connection, DBusError, UnixFd

CALL_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0  # polkit may be asking the user for a password


class HelperError(Exception):
    """The helper (or the bus) refused or failed; name is the D-Bus error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class ProgramExit(namedtuple("ProgramExit", "code signal")):
    __slots__ = ()

    @property
    def status(self) -> int:
        """The shell's convention: the exit code, or 128+N for signal N."""
        return 128 + self.signal if self.signal else self.code


def _translate(exc: DBusError) -> HelperError:
    name, message = exc.name, exc.message
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"):
        message = "appjail-helper is not running and could not be started (see `appjail doctor`)"
    elif name in ("org.freedesktop.DBus.Error.FileNotFound", "org.freedesktop.DBus.Error.NoServer"):
        message = "the system bus is not reachable (see `appjail doctor`)"
    elif name == "org.freedesktop.DBus.Error.AccessDenied":
        message = "the bus refused the call to appjail-helper (is its bus policy installed?)"
    return HelperError(name, message.splitlines()[0] if message else name)


class Client:
    def __init__(self, address: str | None = None) -> None:
        try:
            self.connection = Connection(address)
        except DBusError as exc:
            raise _translate(exc) from None

    def _call(self, method: str, *args, timeout: float | None = CALL_TIMEOUT, interactive: bool = True) -> list:
        # interactive: polkit may then ask the user's authentication agent for a password
        try:
            return self.connection.call(api.BUS_NAME, api.OBJECT_PATH, api.INTERFACE, method,
                                        api.METHODS[method].in_signature, args, timeout=timeout,
                                        interactive=interactive)
        except DBusError as exc:
            raise _translate(exc) from None

    def run(self, options: dict, argv: Sequence[bytes], env: Sequence[bytes], cwd: bytes,
            fds: Sequence[int]) -> tuple[str, int, int]:
        """(jail name, pid, exit pipe): read the pipe with read_exit(), which closes it."""
        name, pid, exit_pipe = self._call("Run", options, list(argv), list(env), cwd,
                                          [UnixFd(fd) for fd in fds], timeout=RUN_TIMEOUT)
        return name, pid, exit_pipe

    def signal(self, pid: int, signum: int) -> None:
        self._call("Signal", pid, signum)

    def stop(self, name: str) -> None:
        self._call("Stop", name)

    def list(self) -> list[dict]:
        return self._call("List")[0]

    def inspect(self, name: str) -> dict:
        return self._call("Inspect", name)[0]

    def whoami(self) -> dict:
        return self._call("WhoAmI", interactive=False)[0]

    def reload(self) -> dict:
        """Have the helper read the declared jails' files again: what it created, recreated, removed, errors."""
        return self._call("Reload", timeout=RUN_TIMEOUT)[0]

    def close(self) -> None:
        self.connection.close()


def read_exit(exit_pipe: int) -> ProgramExit | None:
    """Block until the helper writes the program's exit into its pipe; closes the pipe.

    The helper writes once the program has ended and a jail it left empty is
    gone. None: end-of-file without an exit, the helper went away.
    """
    data = b""
    try:
        while chunk := os.read(exit_pipe, 64):
            data += chunk
    finally:
        os.close(exit_pipe)
    fields = data.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        return None
    return ProgramExit(int(fields[0]), int(fields[1]))


def session_environment() -> list[bytes]:
    """The caller's environment as NAME=VALUE bytes, as the program will get it."""
    return [key + b"=" + value for key, value in os.environb.items()]
