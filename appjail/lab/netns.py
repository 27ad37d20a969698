"""Network namespaces entered with setns(2) alone.

`ip netns exec` also unshares the mount namespace (and remounts /sys), so a
process started through it never sees namespaces mounted under /run/netns
after it started. The engine creates jails at run time, so it has to run with
only its network namespace changed: that is all these helpers do.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int

NetnsRef = str | os.PathLike[str]


class SetnsError(OSError):
    """A network namespace could not be opened or entered."""


def netns_path(name_or_path: NetnsRef) -> Path:
    """A bare name means /run/netns/NAME, as `ip netns` names them; anything with a slash is a path."""
    text = os.fspath(name_or_path)
    return Path(text) if "/" in text else NETNS_RUN_DIR / text


def _open(path: NetnsRef) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SetnsError(exc.errno, f"cannot open network namespace {os.fspath(path)}: {exc.strerror}") from exc


def setns(fd: int, what: NetnsRef, nstype: int = CLONE_NEWNET) -> None:
    """Enter the namespace `fd` refers to (a network namespace unless `nstype` says otherwise)."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise SetnsError(err, f"setns({os.fspath(what)}): {os.strerror(err)}")


def enter_netns(name_or_path: NetnsRef) -> None:
    """Move the calling thread (the whole process, if it has one thread) into a network namespace."""
    path = netns_path(name_or_path)
    fd = _open(path)
    try:
        setns(fd, path)
    finally:
        os.close(fd)


@contextmanager
def in_netns(name_or_path: NetnsRef) -> Iterator[None]:
    """Run the body with the calling thread in a namespace, then put the thread back where it was."""
    previous = _open("/proc/thread-self/ns/net")
    try:
        enter_netns(name_or_path)
        yield
    finally:
        try:
            setns(previous, "/proc/thread-self/ns/net (previous)")
        finally:
            os.close(previous)


def netns_exec_argv(name_or_path: NetnsRef, argv: Sequence[str]) -> list[str]:
    """An argv running `argv` inside a network namespace entered with setns only.

    `appjail` must be importable by sys.executable (installed, or on PYTHONPATH).
    """
    return [sys.executable, "-m", "appjail.lab.nsexec", os.fspath(name_or_path), "--", *argv]


def netns_pids(name_or_path: NetnsRef) -> list[int]:
    """Processes whose network namespace is the given one (what `ip netns pids` prints)."""
    try:
        target = os.stat(netns_path(name_or_path))
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:  # gone meanwhile, or a zombie
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry.name))
    return pids
