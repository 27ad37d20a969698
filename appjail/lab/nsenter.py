"""`python -m appjail.lab.nsenter PID -- COMMAND [ARG...]`: run COMMAND in the pid and
cgroup namespaces of process PID (the lab's systemd, see systemd.py), and in a
copy of its mount namespace.

Like `nsenter --pid --mount --cgroup`, which also forks (a pid namespace
applies to children only) but passes no signal on: here SIGTERM, SIGINT and
SIGHUP go on to COMMAND, and this process ends as COMMAND did, so stopping
it stops COMMAND. The copy of the mount namespace lacks the read-only bind
over /proc/sys that systemd gets (systemdinit.py): the helper writes the
sysctls of its jails' network namespaces there. Shared mounts stay shared
(/run/netns). The working directory is kept (entering a mount namespace
moves to its root). Exit status 125 if a namespace cannot be entered,
126/127 if COMMAND cannot be run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from appjail.lab.netns import setns
from appjail.lab.nsexec import exec_command, split_args

USAGE = "usage: python -m appjail.lab.nsenter PID -- COMMAND [ARG...]"
NAMESPACES = ("cgroup", "pid", "mnt")  # all opened before any is entered
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_CLONE_NEWNS = 0x00020000

_libc = ctypes.CDLL(None, use_errno=True)


def enter(pid: str) -> None:
    """Enter PID's namespaces of NAMESPACES, then a copy of its mount namespace with /proc/sys
    writable, keeping the working directory."""
    cwd = os.getcwd()
    paths = [f"/proc/{pid}/ns/{name}" for name in NAMESPACES]
    fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in paths]
    try:
        for fd, path in zip(fds, paths):
            setns(fd, path, 0)  # 0: whatever namespace fd is
    finally:
        for fd in fds:
            os.close(fd)
    if _libc.unshare(_CLONE_NEWNS) != 0 or _libc.umount2(b"/proc/sys", 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot make /proc/sys writable: {os.strerror(error)}")
    os.chdir(cwd)


def main(args: list[str] | None = None) -> int:
    parsed = split_args(sys.argv[1:] if args is None else args, USAGE)
    if parsed is None:
        return 2
    pid, command = parsed
    try:
        enter(pid)
    except OSError as exc:
        print(f"nsenter: {exc}", file=sys.stderr)
        return 125
    child = os.fork()
    if child == 0:
        os._exit(exec_command("nsenter", command))
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, _frame: os.kill(child, signum))
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
