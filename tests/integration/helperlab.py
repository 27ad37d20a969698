"""The test users' view of the helper: the CLI from a world-readable copy.

Test users cannot be expected to reach the checkout (it may live under
/root) or its venv: they run the system Python, with the python3-dbus
package, on a world-readable copy of the package.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appjail.lab.helper import UserCommand, stage_package
from appjail.lab.lab import host_namespace
from appjail.lab.netns import netns_exec_argv

LAB_PREFIX = "ajlab"
HELPER_NS = host_namespace(LAB_PREFIX)  # the helper's network namespace: the test users' too
MEMBER, OTHER_MEMBER, OUTSIDER = "ajt-a", "ajt-b", "ajt-out"
DNS = "192.0.2.53"
USER_PYTHON = "/usr/bin/python3"
USER_CODE = Path("/var/tmp/appjail-test-code")


def stage_user_code() -> None:
    """Copy the package to USER_CODE for the test users (replacing an older copy)."""
    stage_package(USER_CODE)


def remove_user_code() -> None:
    shutil.rmtree(USER_CODE, ignore_errors=True)


def user_command(bus_address: str) -> UserCommand:
    return UserCommand(bus_address, USER_PYTHON, str(USER_CODE), HELPER_NS)


def appjail_argv(*args: str) -> list[str]:
    return user_command("").argv(*args)


def in_helper_netns(argv: list[str]) -> list[str]:
    """ARGV, run by root, in the helper's network namespace (for commands that become the user themselves)."""
    return netns_exec_argv(HELPER_NS, argv)


def user_popen_kwargs(user: str, bus_address: str) -> dict:
    return user_command(bus_address).popen_kwargs(user)


def as_user(user: str, bus_address: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `appjail ARGS` as USER; stdin is a pipe (or /dev/null), never a terminal."""
    return user_command(bus_address).run(user, *args, **kwargs)


def appjail(helper, user, *args, **kwargs):
    return as_user(user, helper.bus_address, *args, **kwargs)


def jails(helper, user=MEMBER) -> list[dict]:
    result = appjail(helper, user, "ls", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ls_seconds(helper, user: str) -> float:
    """Seconds `appjail ls` of USER takes (the CLI's own start included): the helper's main loop is free."""
    start = time.monotonic()
    result = appjail(helper, user, "ls", timeout=30)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - start


def open_fds(helper) -> int:
    """How many descriptors the helper process holds."""
    return len(os.listdir(f"/proc/{helper.proc.pid}/fd"))


SIGNAL_LISTENER = """
import sys, dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib
from appjail import interface as api
DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(sys.argv[1])
loop = GLib.MainLoop()
def seen(*args, member=None):
    print(member, *[str(bool(a)) if isinstance(a, dbus.Boolean) else str(a) for a in args], flush=True)
bus.add_signal_receiver(seen, dbus_interface=api.INTERFACE, member_keyword="member")
# the helper signals only to connections that called it (and polkit let through)
bus.call_blocking(api.BUS_NAME, api.OBJECT_PATH, api.INTERFACE, "WhoAmI", "", ())
print("listening", flush=True)
GLib.timeout_add_seconds(30, loop.quit)
loop.run()
"""


def signal_listener(helper, user: str) -> subprocess.Popen[str]:
    """A client of USER printing each signal of the helper it receives as "MEMBER ARGS...", one a line."""
    listener = subprocess.Popen([USER_PYTHON, "-c", SIGNAL_LISTENER, helper.bus_address], stdout=subprocess.PIPE,
                                text=True, **user_popen_kwargs(user, helper.bus_address))
    assert listener.stdout.readline() == "listening\n"
    return listener


def signals_seen(listener: subprocess.Popen[str], count: int, timeout: float = 15) -> list[str]:
    """The next COUNT lines of a signal_listener (fewer if it ends or the timeout passes), then ends it."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < count and time.monotonic() < deadline:
            line = listener.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
    finally:
        listener.kill()
        listener.wait()
    return seen


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


_libc = ctypes.CDLL(None, use_errno=True)
_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 0x2, 0x4, 0x2


@contextmanager
def unanswering_fuse() -> Iterator[Path]:
    """A FUSE mount, open to every user, whose server never answers: any use of it hangs.

    Nobody reads /dev/fuse, so even the kernel's INIT stays unanswered and
    every request waits (killably). Closing the device at the end aborts
    the connection: whatever still waits gets an error.
    """
    mountpoint = Path(tempfile.mkdtemp(prefix="appjail-fuse-", dir="/var/tmp"))
    mountpoint.chmod(0o755)
    device = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        options = f"fd={device},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if _libc.mount(b"appjail-test", bytes(mountpoint), b"fuse", _MS_NOSUID | _MS_NODEV,
                       options) != 0:
            raise OSError(ctypes.get_errno(), "cannot mount a FUSE filesystem", str(mountpoint))
        try:
            yield mountpoint
        finally:
            os.close(device)
            device = -1
            _libc.umount2(bytes(mountpoint), _MNT_DETACH)
    finally:
        if device >= 0:
            os.close(device)
        mountpoint.rmdir()
