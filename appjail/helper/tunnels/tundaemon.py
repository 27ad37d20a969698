"""Tunnel daemons (openvpn, wireguard-go) as appjail's tunnel user, and how the helper knows its own.

A jail's tunnel daemon handles what a member brought (an OpenVPN file, a
WireGuard peer's packets), so it never runs as root: it is started through
setpriv as the system user appjail-tunnel, with no supplementary groups, no
new privileges (no setuid or file capabilities can raise it) and no
capability but those it is given (wireguard-go: CAP_NET_ADMIN to make its
device; openvpn: none, it attaches to a tun device the helper made for that
user).

The helper knows its daemons by what it started, never by a program's
name or arguments: only the helper starts processes as appjail-tunnel, and
each daemon's pid and start time are kept in a root-only record
(/run/appjail/tunnels/IFNAME) that a later helper reads to adopt it. A
local user's process called `openvpn --dev aj-x` is nobody's concern here:
it is never signalled or waited for.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import pwd
import select
import signal
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from ..kernel.netns import NetnsError

TUNNEL_USER = "appjail-tunnel"
RECORDS = Path("/run/appjail/tunnels")
# the tun clone device as the tunnel user may open it (/dev/net/tun may be root's alone, as in containers);
# opening it without a capability attaches only to a device made for that user
TUN_NODE = Path("/dev/net/appjail-tun")
_TUN_DEVICE = os.makedev(10, 200)
STOP_TIMEOUT = 2.0
_TUNSETIFF, _TUNSETPERSIST, _TUNSETOWNER, _TUNSETGROUP = 0x400454CA, 0x400454CB, 0x400454CC, 0x400454CE
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000


@dataclass(frozen=True)
class ProcessStamp:
    """A process as the kernel knows it: its pid and its start time (clock ticks after boot), which a
    reused pid does not share."""

    pid: int
    start: int


@functools.lru_cache(maxsize=1)
def account() -> tuple[int, int]:
    """The tunnel user's uid and gid; NetnsError in one sentence when the install did not make it."""
    try:
        entry = pwd.getpwnam(TUNNEL_USER)
    except KeyError:
        raise NetnsError(f"the system user {TUNNEL_USER}, which runs tunnel daemons, does not exist: "
                         "reinstall appjail") from None
    return entry.pw_uid, entry.pw_gid


def command(argv: list[str], capabilities: tuple[str, ...] = ()) -> list[str]:
    """ARGV run as the tunnel user with only CAPABILITIES (names such as "net_admin")."""
    uid, gid = account()
    caps = ",".join(["-all", *(f"+{name}" for name in capabilities)])
    ambient = [f"--ambient-caps={caps}"] if capabilities else []
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
            f"--inh-caps={caps}", *ambient, f"--bounding-set={caps}", "--", *argv]


def started(pid: int) -> ProcessStamp:
    """The identity of a child just started (it cannot be reaped before the helper waits for it)."""
    return ProcessStamp(pid, int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]))


def identity_of(pid: int) -> ProcessStamp | None:
    """PID's identity if it runs as the tunnel user (None: ended, or not one of appjail's daemons)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # ended, not yet reaped by its (new) parent
        return None
    uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
    return ProcessStamp(pid, int(fields[19])) if uids and all(int(uid) == account()[0] for uid in uids) else None


def pidfd(identity: ProcessStamp) -> int | None:
    """A pidfd of the process IDENTITY names, or None when it is gone (checked after opening: a reused pid
    is never taken for it)."""
    try:
        fd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return None
    if identity_of(identity.pid) != identity:
        os.close(fd)
        return None
    return fd


def terminate(identity: ProcessStamp) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT, to one of appjail's daemons; nothing to anyone else."""
    fd = pidfd(identity)
    if fd is None:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not select.select([fd], [], [], STOP_TIMEOUT)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], STOP_TIMEOUT)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def _records(program: str) -> Path:
    """RECORDS/PROGRAM, root's alone."""
    RECORDS.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(RECORDS)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise NetnsError(f"{RECORDS} is not root's directory")
    (RECORDS / program).mkdir(mode=0o700, exist_ok=True)
    return RECORDS / program


def record(program: str, ifname: str, identity: ProcessStamp) -> None:
    """Keep IFNAME's daemon for a later helper (root's file, written whole)."""
    path = _records(program) / ifname
    partial = path.with_suffix(".new")
    partial.write_text(json.dumps({"pid": identity.pid, "start": identity.start}))
    partial.replace(path)


def recorded(program: str, ifname: str) -> ProcessStamp | None:
    """IFNAME's daemon as recorded, if it still runs."""
    try:
        data = json.loads((RECORDS / program / ifname).read_text())
        identity = ProcessStamp(int(data["pid"]), int(data["start"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return identity if identity_of(identity.pid) == identity else None


def stop(program: str, ifname: str) -> None:
    """End IFNAME's recorded daemon, if it runs, and forget it."""
    identity = recorded(program, ifname)
    if identity is not None:
        terminate(identity)
    (RECORDS / program / ifname).unlink(missing_ok=True)


def sweep(program: str, prefix: str, live_ifnames: set[str]) -> list[str]:
    """Stop PROGRAM's recorded daemons of PREFIX* interfaces no live jail has, of this namespace, and any
    process of the tunnel user's that no record names (its helper died before recording it)."""
    removed = []
    for path in sorted((RECORDS / program).glob(f"{prefix}*")) if (RECORDS / program).is_dir() else []:
        identity = recorded(program, path.name)
        if path.name in live_ifnames or (identity is not None and not _here(identity.pid)):
            continue  # a live jail's, or another namespace's helper's
        stop(program, path.name)
        removed.append(path.name)
    for identity in _orphans():
        terminate(identity)
        removed.append(f"pid {identity.pid}")
    return removed


def _here(pid: int) -> bool:
    """Whether PID is in the calling thread's network namespace."""
    try:
        theirs, own = os.stat(f"/proc/{pid}/ns/net"), os.stat("/proc/thread-self/ns/net")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (own.st_dev, own.st_ino)


def _orphans() -> list[ProcessStamp]:
    """The tunnel user's processes of the calling thread's network namespace that no record names."""
    known = {identity for path in RECORDS.glob("*/*") if path.suffix != ".new"
             and (identity := recorded(path.parent.name, path.name)) is not None}
    return [identity for entry in os.scandir("/proc") if entry.name.isdigit()
            and (identity := identity_of(int(entry.name))) is not None and identity not in known
            and _here(identity.pid)]


def tun_node() -> Path:
    """TUN_NODE, the tunnel group's, made when missing or not what it should be."""
    gid = account()[1]
    try:
        info = os.lstat(TUN_NODE)
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == _TUN_DEVICE and (info.st_uid, info.st_gid) == (0, gid) \
                and stat.S_IMODE(info.st_mode) == 0o660:
            return TUN_NODE
        TUN_NODE.unlink()
    except FileNotFoundError:
        pass
    partial = TUN_NODE.with_name(TUN_NODE.name + ".new")
    partial.unlink(missing_ok=True)
    os.mknod(partial, stat.S_IFCHR | 0o600, _TUN_DEVICE)
    os.chown(partial, 0, gid)
    os.chmod(partial, 0o660)
    partial.replace(TUN_NODE)
    return TUN_NODE


def open_tun(ifname: str, flags: int = IFF_TUN | IFF_NO_PI) -> int:
    """A new tun device IFNAME in the calling thread's namespace, made as root: its descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", ifname.encode(), flags))
    except OSError as exc:
        os.close(fd)
        raise NetnsError(f"could not make the tun device {ifname}: {exc.strerror}") from None
    return fd


def make_tun(ifname: str) -> None:
    """A persistent tun device IFNAME in the calling thread's namespace that the tunnel user may open:
    openvpn attaches to it without any capability."""
    uid, gid = account()
    fd = open_tun(ifname)
    try:
        for request, value in ((_TUNSETOWNER, uid), (_TUNSETGROUP, gid), (_TUNSETPERSIST, 1)):
            fcntl.ioctl(fd, request, value)
    finally:
        os.close(fd)
