"""Typed access to appjail-helper over the system bus, for the CLI and the tray.

Unprivileged: imports dbus-python and the contract, nothing of the helper.
The bus is the one in DBUS_SYSTEM_BUS_ADDRESS, else the system bus.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Sequence

import dbus
import dbus.lowlevel

from . import interface as api

# libdbus treats INT_MAX milliseconds as "no timeout": Wait lasts as long
# as the program does.
NO_TIMEOUT = 0x7FFFFFFF / 1000.0
CALL_TIMEOUT = 60.0


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


def plain(value):
    """dbus-python values to plain Python values."""
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def _translate(exc: dbus.DBusException) -> HelperError:
    name = exc.get_dbus_name() or api.ERROR_FAILED
    message = exc.get_dbus_message() or str(exc)
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"):
        message = "appjail-helper is not running and could not be started (see `appjail doctor`)"
    elif name in ("org.freedesktop.DBus.Error.FileNotFound", "org.freedesktop.DBus.Error.NoServer"):
        message = "the system bus is not reachable (see `appjail doctor`)"
    elif name == "org.freedesktop.DBus.Error.AccessDenied":
        message = "the bus refused the call to appjail-helper (is its bus policy installed?)"
    return HelperError(name, message.splitlines()[0] if message else name)


class Client:
    def __init__(self, bus: dbus.Bus | None = None) -> None:
        try:
            self.bus = bus or dbus.SystemBus(private=True)
        except dbus.DBusException as exc:
            raise _translate(exc) from None

    def _call(self, method: str, signature: str, *args, timeout: float = CALL_TIMEOUT,
              interactive: bool = True):
        message = dbus.lowlevel.MethodCallMessage(api.BUS_NAME, api.OBJECT_PATH, api.INTERFACE, method)
        message.append(*args, signature=signature)
        # polkit may then ask the user's authentication agent for a password
        message.set_allow_interactive_authorization(interactive)
        try:
            reply = self.bus.send_message_with_reply_and_block(message, timeout)
        except dbus.DBusException as exc:
            raise _translate(exc) from None
        values = reply.get_args_list(byte_arrays=True)
        return values[0] if len(values) == 1 else tuple(values)

    def run(self, options: dict, argv: Sequence[bytes], env: Sequence[bytes], cwd: bytes,
            fds: Sequence[int]) -> tuple[str, int]:
        typed = {k: (dbus.Array(v, signature="s") if isinstance(v, list) else v)
                 for k, v in options.items()}
        name, pid = self._call(
            "Run", "a{sv}aayaayayah", dbus.Dictionary(typed, signature="sv"),
            [dbus.ByteArray(a) for a in argv], [dbus.ByteArray(e) for e in env],
            dbus.ByteArray(cwd), [dbus.types.UnixFd(fd) for fd in fds], timeout=300)
        return str(name), int(pid)

    def wait(self, pid: int) -> ProgramExit:
        code, sig = self._call("Wait", "u", pid, timeout=NO_TIMEOUT)
        return ProgramExit(int(code), int(sig))

    def signal(self, pid: int, signum: int) -> None:
        self._call("Signal", "ui", pid, signum)

    def stop(self, name: str) -> None:
        self._call("Stop", "s", name)

    def list(self) -> list[dict]:
        return plain(self._call("List", ""))

    def inspect(self, name: str) -> dict:
        return plain(self._call("Inspect", "s", name))

    def whoami(self) -> dict:
        return plain(self._call("WhoAmI", "", interactive=False))

    def close(self) -> None:
        self.bus.close()


def session_environment() -> list[bytes]:
    """The caller's environment as NAME=VALUE bytes, as the program will get it."""
    return [key + b"=" + value for key, value in os.environb.items()]
