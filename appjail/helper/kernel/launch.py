"""Start one program inside a jail as the calling user (docs/design.md section 7).

`launch()` does all the work that can fail in an interesting way in the
parent: it opens the jail's namespace, validates and opens the resolver
files, builds the mounts the child will attach (as detached mount objects,
see below), and computes argv, environment and the PATH candidates. Then it
forks. The helper is multi-threaded, so the child runs only system calls:
`os` functions and ctypes functions bound at import time. It never imports,
logs, or calls into libc functions that lock (the glibc set*id() wrappers
synchronise all threads; the child uses the raw system calls instead). In
the child, step by step:

0. wait at the gate, a pipe, until the parent opens it (`open_gate`): the
   helper first puts the child into the caller's systemd scope where
   systemd runs (scopes.py), so nothing the program does happens outside
   it; a gate closed without a word means "give up" (exit 125, no report);
1. setsid(), so the program leads its own session;
2. setns() into the jail's network namespace;
3. unshare(CLONE_NEWNS) and make every mount a slave, so nothing mounted
   in the child propagates back to the host;
4. attach the prepared mounts: the jail's resolv.conf and nsswitch.conf over
   /etc/resolv.conf and /etc/nsswitch.conf, and an empty read-only tmpfs
   (mode 0755) over each directory of `HIDDEN_DIRS` that exists, so no NSS
   module can ask a host daemon (systemd-resolved, nscd, avahi) for names.
   The system bus is left alone unless asked (`hide_system_bus`, run's
   --no-system-bus): GUI programs need it, and a program that uses it can
   ask resolved or avahi for names outside the jail;
5. turn the passed descriptors into 0, 1, 2, ... (/dev/null for any of the
   first three not passed) and close every other one;
6. take on the caller's process context (see ProcessContext): umask,
   resource limits and audit loginuid, while still root (raising a hard
   limit or setting the loginuid needs it);
7. set no_new_privs, clear the ambient capabilities, then setgroups(),
   setresgid() and setresuid() to exactly what `Identity` says, and check
   the result. A non-root caller ends with no capabilities at all (the
   kernel clears permitted and effective ones on the uid change; the
   launcher also clears the inheritable set and verifies all of them). The
   helper decides who may launch; a root caller (uid 0) simply keeps root;
8. join a new, anonymous session keyring, as the user (so the user owns it
   and it counts against the user's key quota, as pam_keyinit does at a
   login): else the program would share the helper's session keyring, and
   with it every key, with every program of every user the helper starts;
9. chdir() to the requested directory, as the user;
10. if fd 0 is a terminal, make it the controlling terminal (failure ignored);
11. reset every signal disposition and the signal mask, look the program
   up in the caller's PATH (as the user, execvpe() semantics) and exec.

Any failure in the child is written as "CODE message" to a close-on-exec
pipe; end-of-file on that pipe means exec succeeded. Exit codes follow the
shell: 127 not found, 126 found but not executable, 125 anything else.

Symlinked /etc/resolv.conf: on many hosts /etc/resolv.conf is a symlink (to
systemd-resolved's stub, resolvconf's or NetworkManager's file). mount(2)
follows it and would cover the symlink's target: a file elsewhere, which
may be missing (nothing to mount on) or controlled by someone else. The
launcher never follows a destination symlink: it clones the jail's file
with open_tree(2) and attaches it with move_mount(2) without
MOVE_MOUNT_T_SYMLINKS, which mounts on the path itself, a symlink included.
Inside the jail /etc/resolv.conf is then the jail's file, whether the
symlink's target exists or not and whoever owns it; the target is neither
covered nor created. Sources are opened with O_NOFOLLOW and must be
regular files. This needs Linux 5.2 (open_tree, move_mount, fsmount) and
5.9 (close_range).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import os
import platform
import resource
import signal
import stat
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import NoReturn

from ... import interface as api

# Directories holding host name-lookup sockets, hidden under an empty tmpfs.
HIDDEN_DIRS = ("/run/systemd/resolve", "/run/nscd", "/var/run/nscd", "/run/avahi-daemon")
# The system bus's socket directory, hidden the same way on request.
SYSTEM_BUS_DIRS = ("/run/dbus", "/var/run/dbus")
# Files of a jail's resolver directory, each bound over /etc/NAME.
RESOLVER_FILES = ("resolv.conf", "nsswitch.conf")


# System call numbers that differ between architectures; everything from
# 424 on (open_tree, move_mount, fsopen, ...) is the same everywhere.
_ARCH_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setresuid": 117, "setresgid": 119, "capget": 125, "capset": 126,
               "keyctl": 250},
    "aarch64": {"setgroups": 159, "setresuid": 147, "setresgid": 149, "capget": 90, "capset": 91,
                "keyctl": 219},
}
_NR_OPEN_TREE = 428
_NR_MOVE_MOUNT = 429
_NR_FSOPEN = 430
_NR_FSCONFIG = 431
_NR_FSMOUNT = 432
_NR_CLOSE_RANGE = 436

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_REC = 0x4000
_MS_SLAVE = 1 << 19
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_FSOPEN_CLOEXEC = 1
_FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_MOUNT_ATTR_RDONLY_NOSUID_NODEV_NOEXEC = 0x1 | 0x2 | 0x4 | 0x8
_KEYCTL_JOIN_SESSION_KEYRING = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_TIOCSCTTY = 0x540E
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_MAX_FD = 0xFFFFFFFF
MAX_REPORT = 4096
_GATE_OPEN = b"1"
_LOGINUID = "/proc/self/loginuid"
_LIMITS_VALUES_AT = 26  # /proc/PID/limits: a 26-column name, then soft, hard, units


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
# Bound here, in the parent: the first attribute access calls dlsym(), which
# takes the dynamic loader's lock.
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_setns = _libc.setns
_unshare = _libc.unshare
_mount = _libc.mount
_prctl = _libc.prctl
_ioctl = _libc.ioctl
_signal = _libc.signal
_signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
_signal.restype = ctypes.c_void_p
_sigprocmask = _libc.sigprocmask
_EMPTY_SIGSET = (ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong))))()  # sigset_t


@dataclass(frozen=True)
class Identity:
    """Who launches: from the bus and the password database, never from the client."""

    uid: int
    gid: int
    groups: tuple[int, ...]


@dataclass(frozen=True)
class ProcessContext:
    """What the program keeps of the process that asked for it, as the kernel reports it.

    A program started from a shell inherits these; one started by the
    helper would get the helper's (umask 022, the service's limits, no or
    the wrong audit loginuid) unless they are carried over.
    """

    umask: int
    limits: tuple[tuple[int, int, int], ...]    # (RLIMIT_*, soft, hard)
    loginuid: int | None                        # None: the kernel has no audit


def parse_limits(text: str) -> tuple[tuple[int, int, int], ...]:
    """/proc/PID/limits as (RLIMIT_*, soft, hard): the kernel lists them in RLIMIT_* order.

    Read from /proc rather than with prlimit(2), which needs CAP_SYS_RESOURCE
    for another user's process.
    """
    def value(text: str) -> int:
        return resource.RLIM_INFINITY if text == "unlimited" else int(text)

    return tuple((limit, value(soft), value(hard)) for limit, (soft, hard, *_units)
                 in enumerate(line[_LIMITS_VALUES_AT:].split() for line in text.splitlines()[1:]))


def read_process_context(pid: int, uid: int, proc: str = "/proc") -> ProcessContext | None:
    """The context of process `pid`, which must run as `uid`; OSError if it cannot be read.

    The caller pins the process (authz.identify holds a pidfd while it reads
    it); a process of another uid is refused outright, except root's: root
    may connect under another identity (seteuid around connect, as the
    tray's tests do) and could do anything anyway, so its calls are taken
    as that identity's, with no context of its own (None: the helper's).
    """
    with open(f"{proc}/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    real_uid = int(fields["Uid"].split()[0])
    if real_uid == 0 != uid:
        return None
    if real_uid != uid:
        raise OSError(errno.EPERM, f"process {pid} does not run as uid {uid}")
    with open(f"{proc}/{pid}/limits") as limits_file:
        limits = parse_limits(limits_file.read())
    try:
        with open(f"{proc}/{pid}/loginuid") as loginuid_file:
            loginuid: int | None = int(loginuid_file.read())
    except FileNotFoundError:  # a kernel without CONFIG_AUDIT
        loginuid = None
    return ProcessContext(int(fields["Umask"], 8), limits, loginuid)


@dataclass(frozen=True)
class LaunchRequest:
    netns_path: str                 # /run/netns/aj-NAME
    resolver_dir: str | None        # /etc/netns/aj-NAME: files bound over /etc
    argv: list[bytes]               # argv[0] is looked up in PATH after the privilege drop
    env: dict[bytes, bytes]         # the caller's environment
    cwd: bytes
    fds: list[int]                  # become 0, 1, 2, ... in the child
    context: ProcessContext | None = None   # None: the helper's own
    hide_system_bus: bool = False


class LaunchError(RuntimeError):
    """The program did not start; `exit_code` is what a shell would report."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _ChildFailure(Exception):
    """A failure in the child that is not a plain system call error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class _Prepared:
    """Everything the child needs, computed before the fork."""

    netns_fd: int
    mounts: list[tuple[int, bytes]]     # detached mount object, where to attach it
    fds: list[int]
    caller: Identity
    groups: ctypes.Array
    cwd: bytes
    argv: list[bytes]
    env: Mapping[bytes, bytes]
    candidates: list[bytes]
    syscalls: Mapping[str, int]
    context: ProcessContext | None


def hidden_dirs(candidates: Sequence[str] = HIDDEN_DIRS) -> list[bytes]:
    """The existing directories among `candidates`, symlinks resolved, without repeats.

    /var/run is usually a symlink to /run; the tmpfs is attached to the real
    directory, once. (A stat first: most candidates do not exist, and
    realpath() of each was a tenth of the helper's work for a launch.)
    """
    found: list[bytes] = []
    seen: set[tuple[int, int]] = set()
    for candidate in candidates:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            found.append(os.fsencode(os.path.realpath(candidate)))
    return found


def resolver_mounts(resolver_dir: str) -> list[tuple[str, bytes]]:
    """(jail file, host path) pairs; the host path is covered as it is, symlink or not."""
    return [(os.path.join(resolver_dir, name), os.fsencode(os.path.join("/etc", name)))
            for name in RESOLVER_FILES]


def exec_candidates(program: bytes, env: Mapping[bytes, bytes]) -> list[bytes]:
    """Paths to try for `program`, in order, as os.execvpe() would with `env`'s PATH."""
    if b"/" in program:
        return [program]
    search = env.get(b"PATH", os.fsencode(os.defpath))
    return [os.path.join(directory, program) for directory in search.split(b":")]


def open_regular_file(path: str) -> int:
    """An O_PATH descriptor of the regular file at `path`; a symlink is refused, not followed."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def remap_fds(fds: Sequence[int], keep: int) -> None:
    """Make fds[i] descriptor i and close every other descriptor except `keep`.

    `keep` must be at least len(fds). Every source is first copied above
    the targets, so one may overwrite another's slot (as in [1, 0]).
    """
    count = len(fds)
    copies = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, count) for fd in fds]
    for target, copy in enumerate(copies):
        os.dup2(copy, target)
    _close_range(count, keep - 1)
    _close_range(keep + 1, _MAX_FD)


@dataclass(frozen=True)
class Started:
    """A forked child on its way to becoming the program, waiting at its gate."""

    pid: int
    report_fd: int  # end-of-file with nothing read: it exec'd; else "CODE message" (see failure())
    gate_fd: int    # open_gate() lets the child go on; closing it unopened makes the child give up


def start(request: LaunchRequest, caller: Identity) -> Started:
    """Fork the child that becomes `request.argv` in the jail as `caller`, and return at once.

    The child waits at its gate until open_gate(), then enters the caller's
    directory and execs as the caller, which can take forever (a filesystem
    that never answers): whoever calls start() owns `report_fd` and
    `gate_fd`, reaps `pid`, and must not wait on any of them.
    """
    with ExitStack() as cleanup:
        try:
            prepared = _prepare(request, caller, cleanup)
            pipes = [fd for _pipe in range(2) for fd in os.pipe()]
            report_fd, child_end, gate_end, gate_fd = pipes
            try:
                pid = os.fork()
            except OSError:
                for fd in pipes:
                    os.close(fd)
                raise
        except OSError as error:
            raise LaunchError(f"cannot prepare the launch: {_describe(error)}",
                              api.EXIT_SETUP_FAILED) from error
        if pid == 0:
            os.close(gate_fd)  # else the child would hold the gate open itself
            _run_child(prepared, child_end, gate_end)
        os.close(child_end)
        os.close(gate_end)
    return Started(pid, report_fd, gate_fd)


def open_gate(gate_fd: int) -> None:
    """Let a started child go on to become the program; closes `gate_fd`."""
    try:
        os.write(gate_fd, _GATE_OPEN)  # one byte into a fresh pipe: never blocks
    finally:
        os.close(gate_fd)


def failure(report: bytes) -> LaunchError | None:
    """What the child reported: None when it exec'd (it wrote nothing)."""
    if not report:
        return None
    code, _, message = report.partition(b" ")
    return LaunchError(message.decode(errors="replace"), int(code))


def launch(request: LaunchRequest, caller: Identity) -> int:
    """start() and wait for the child's report: for callers that may block (tests, tools).

    Return the pid once the child has exec'd; whoever calls launch() reaps
    it. Raises LaunchError when the program did not start; that child is
    reaped here.
    """
    started = start(request, caller)
    open_gate(started.gate_fd)
    try:
        report = _read_all(started.report_fd)
    finally:
        os.close(started.report_fd)
    error = failure(report)
    if error is None:
        return started.pid
    os.waitpid(started.pid, 0)
    raise error


def _prepare(request: LaunchRequest, caller: Identity, cleanup: ExitStack) -> _Prepared:
    if not request.argv:
        raise LaunchError("no program given", api.EXIT_SETUP_FAILED)
    syscalls = _ARCH_SYSCALLS.get(platform.machine())
    if syscalls is None:
        raise LaunchError(f"launching is not supported on {platform.machine()}", api.EXIT_SETUP_FAILED)

    def opened(fd: int) -> int:
        cleanup.callback(os.close, fd)
        return fd

    netns_fd = opened(os.open(request.netns_path, os.O_RDONLY | os.O_CLOEXEC))
    hidden = HIDDEN_DIRS + (SYSTEM_BUS_DIRS if request.hide_system_bus else ())
    mounts = [(opened(_empty_tmpfs()), directory) for directory in hidden_dirs(hidden)]
    if request.resolver_dir is not None:
        for source, target in resolver_mounts(request.resolver_dir):
            source_fd = opened(open_regular_file(source))
            clone = _check(_syscall(_NR_OPEN_TREE, source_fd, b"",
                                    _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_EMPTY_PATH),
                           f"clone {source}")
            mounts.append((opened(clone), target))
    for fd in request.fds:
        # a bad descriptor fails here, with a clear message (F_GETFD, not fstat():
        # that would ask the file's filesystem, which may never answer)
        fcntl.fcntl(fd, fcntl.F_GETFD)
    # A program started with 0, 1 or 2 closed would get one of its own files
    # there and could write its error messages into it.
    stdio = [opened(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
             for _ in range(3 - len(request.fds))]
    return _Prepared(
        netns_fd=netns_fd, mounts=mounts, fds=[*request.fds, *stdio],
        caller=caller, groups=(ctypes.c_uint * len(caller.groups))(*caller.groups),
        cwd=request.cwd, argv=list(request.argv), env=dict(request.env),
        candidates=exec_candidates(request.argv[0], request.env), syscalls=syscalls,
        context=request.context)


def _empty_tmpfs() -> int:
    """A detached, empty, read-only tmpfs of mode 0755."""
    fs_fd = _check(_syscall(_NR_FSOPEN, b"tmpfs", _FSOPEN_CLOEXEC), "open a tmpfs")
    try:
        _check(_syscall(_NR_FSCONFIG, fs_fd, _FSCONFIG_SET_STRING, b"mode", b"0755", 0),
               "configure a tmpfs")
        _check(_syscall(_NR_FSCONFIG, fs_fd, _FSCONFIG_CMD_CREATE, None, None, 0),
               "create a tmpfs")
        return _check(_syscall(_NR_FSMOUNT, fs_fd, _FSMOUNT_CLOEXEC,
                               _MOUNT_ATTR_RDONLY_NOSUID_NODEV_NOEXEC), "mount a tmpfs")
    finally:
        os.close(fs_fd)


def _check(result: int, what: str) -> int:
    """`result` of a libc call, or OSError("cannot WHAT: reason") when it failed."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot {what}: {os.strerror(code)}")
    return result


def _describe(error: OSError) -> str:
    return f"{error.filename}: {error.strerror}" if error.filename else str(error.strerror)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, MAX_REPORT):
        chunks.append(chunk)
    return b"".join(chunks)


# ---- the child: from here on, nothing that may take another thread's lock ----

def _run_child(prepared: _Prepared, report_fd: int, gate_fd: int) -> NoReturn:
    """Become the program, or report why not; never returns into the helper."""
    code, message = api.EXIT_SETUP_FAILED, "launch failed"
    try:
        gc.disable()  # a collection could run finalizers of the helper's objects
        if os.read(gate_fd, len(_GATE_OPEN)) != _GATE_OPEN:
            os._exit(code)  # the parent gave up on this launch and answered already
        os.close(gate_fd)
        try:
            report_fd = fcntl.fcntl(report_fd, fcntl.F_DUPFD_CLOEXEC, len(prepared.fds))
            _become_program(prepared, report_fd)
        except _ChildFailure as failure:
            code, message = failure.code, str(failure)
        except OSError as error:
            message = _describe(error)
        except BaseException as error:
            message = str(error) or type(error).__name__
        os.write(report_fd, f"{code} {message}".encode(errors="replace")[:MAX_REPORT])
    finally:
        os._exit(code)


def _become_program(prepared: _Prepared, report_fd: int) -> NoReturn:
    os.setsid()
    _check(_setns(prepared.netns_fd, _CLONE_NEWNET), "enter the jail's network namespace")
    _check(_unshare(_CLONE_NEWNS), "unshare the mount namespace")
    _check(_mount(None, b"/", None, _MS_SLAVE | _MS_REC, None), "make the mounts slaves")
    for mount_fd, target in prepared.mounts:
        _check(_syscall(_NR_MOVE_MOUNT, mount_fd, b"", _AT_FDCWD, target,
                        _MOVE_MOUNT_F_EMPTY_PATH), f"mount over {os.fsdecode(target)}")
    remap_fds(prepared.fds, report_fd)
    if prepared.context is not None:
        _take_context(prepared.context)
    _drop_privileges(prepared.caller, prepared.groups, prepared.syscalls)
    _check(_syscall(prepared.syscalls["keyctl"], _KEYCTL_JOIN_SESSION_KEYRING, None),
           "join a session keyring of its own")
    try:
        os.chdir(prepared.cwd)
    except OSError as error:
        raise _ChildFailure(api.EXIT_SETUP_FAILED, "cannot enter working directory "
                            f"{os.fsdecode(prepared.cwd)}: {error.strerror}") from None
    if os.isatty(0):
        _ioctl(0, _TIOCSCTTY, 0)
    _reset_signals()
    _exec(prepared.candidates, prepared.argv, prepared.env)


def _take_context(context: ProcessContext) -> None:
    """The caller's umask, limits and loginuid; still root, so hard limits may go up."""
    os.umask(context.umask)
    for limit, soft, hard in context.limits:
        try:
            resource.setrlimit(limit, (soft, hard))
        except PermissionError:
            # a hard limit above the helper's own needs CAP_SYS_RESOURCE: keep the helper's
            own_hard = resource.getrlimit(limit)[1]
            resource.setrlimit(limit, (_lower(soft, own_hard), own_hard))
    if context.loginuid is None:
        return
    fd = os.open(_LOGINUID, os.O_RDWR | os.O_CLOEXEC)
    try:
        if int(os.pread(fd, 32, 0)) != context.loginuid:
            # unset: allowed; set: needs CAP_AUDIT_CONTROL and a mutable loginuid
            try:
                os.pwrite(fd, str(context.loginuid).encode(), 0)  # the kernel wants offset 0
            except OSError as error:
                raise _ChildFailure(api.EXIT_SETUP_FAILED, "cannot give the program the caller's "
                                    f"audit loginuid: {error.strerror}") from None
    finally:
        os.close(fd)


def _lower(a: int, b: int) -> int:
    """The lower of two limits, RLIM_INFINITY (-1) being the highest."""
    return b if a == resource.RLIM_INFINITY else a if b == resource.RLIM_INFINITY else min(a, b)


def _drop_privileges(caller: Identity, groups: ctypes.Array, nr: Mapping[str, int]) -> None:
    """no_new_privs, no ambient capabilities, then groups, gid and uid, in that order."""
    uid, gid = ctypes.c_uint(caller.uid), ctypes.c_uint(caller.gid)
    _check(_prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    _check(_prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
           "clear the ambient capabilities")
    _check(_syscall(nr["setgroups"], len(groups), groups), "set the groups")
    _check(_syscall(nr["setresgid"], gid, gid, gid), "set the gid")
    _check(_syscall(nr["setresuid"], uid, uid, uid), "set the uid")
    if caller.uid != 0:
        _drop_capabilities(nr)
    if (os.getresuid() != (caller.uid,) * 3 or os.getresgid() != (caller.gid,) * 3
            or set(os.getgroups()) != set(caller.groups)):
        raise _ChildFailure(api.EXIT_SETUP_FAILED, "the privilege drop did not take effect")


def _drop_capabilities(nr: Mapping[str, int]) -> None:
    """Clear every set, the inheritable one included (setresuid() keeps it), and verify."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    capabilities = (_CapData * 2)()
    _check(_syscall(nr["capset"], ctypes.byref(header), capabilities), "drop the capabilities")
    _check(_syscall(nr["capget"], ctypes.byref(header), capabilities), "read the capabilities")
    if any(c.effective or c.permitted or c.inheritable for c in capabilities):
        raise _ChildFailure(api.EXIT_SETUP_FAILED, "capabilities are left after the privilege drop")


def _reset_signals() -> None:
    """Default dispositions and an empty mask: exec keeps ignored signals and the mask."""
    for signum in range(1, signal.NSIG):
        _signal(signum, None)  # SIG_DFL; refused, harmlessly, for SIGKILL, SIGSTOP, libc's own
    _sigprocmask(signal.SIG_SETMASK, _EMPTY_SIGSET, None)


def _exec(candidates: Sequence[bytes], argv: list[bytes], env: Mapping[bytes, bytes]) -> NoReturn:
    """Try each candidate; report the first error other than "not there", like execvpe()."""
    failed: tuple[bytes, OSError] | None = None
    for path in candidates:
        try:
            os.execve(path, argv, env)
        except OSError as error:
            if failed is None and error.errno not in (errno.ENOENT, errno.ENOTDIR):
                failed = path, error
    if failed is None:
        raise _ChildFailure(api.EXIT_NOT_FOUND, f"{os.fsdecode(argv[0])}: command not found")
    path, error = failed
    raise _ChildFailure(api.EXIT_NOT_EXECUTABLE, f"{os.fsdecode(path)}: {error.strerror}")


def _close_range(first: int, last: int) -> None:
    if first <= last:
        _check(_syscall(_NR_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), 0),
               "close the helper's descriptors")
