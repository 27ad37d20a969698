"""A jail's own WireGuard interface: made in the host namespace, moved into the jail.

The interface is born in the helper's namespace, so its encrypted UDP socket
lives there, then moved into the jail, where it is the only way out. The
kernel's WireGuard is used where it exists; otherwise `wireguard-go`, whose
process and socket stay in the host namespace (the TUN device moves, its
descriptor stays with the process; wireguard-go notices the device going
up in the jail by polling the descriptor, within a second).

Keys reach WireGuard only through a pipe to `wg setconf IFACE /dev/stdin`:
never an argument, never a file. A tunnel interface is named like the
jail's namespace, `aj-NAME`; wireguard-go's control socket is then
/var/run/wireguard/aj-NAME.sock, machine-wide.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import netns
from .netns import NetnsError

KERNEL, USERSPACE = "kernel", "wireguard-go"
DAEMON = "wireguard-go"
SOCKET_DIR = Path("/var/run/wireguard")
READY_TIMEOUT = 3.0  # wireguard-go polls its device once a second
STOP_TIMEOUT = 2.0
REJECT_AFTER = 180  # s: WireGuard drops a session whose handshake is older
UP, IDLE, DOWN = "up", "idle", "down"  # a tunnel's state as ls/inspect show it
CONNECTING = "connecting"  # and the engine's, for an OpenVPN jail whose tunnel has not come up yet
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
_IFA_F_NODAD = 0x02


def create(ipr: IPRoute, ifname: str) -> str:
    """A WireGuard interface IFNAME in the calling thread's namespace; which kind it is."""
    try:
        ipr.link("add", ifname=ifname, kind="wireguard")
        return KERNEL
    except NetlinkError as exc:
        if exc.code != errno.EOPNOTSUPP:  # "Unknown device type": no kernel module
            raise
    if _answers(ifname):
        raise NetnsError(f"a wireguard-go for {ifname} already runs")
    try:
        # wireguard-go daemonises once its device and control socket exist;
        # without LOG_LEVEL its daemon's output goes to /dev/null
        subprocess.run([DAEMON, ifname], env=_ENV, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=10, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise NetnsError(f"wireguard-go could not create {ifname}: {_first_line(exc)}") from None
    return USERSPACE


def configure(ifname: str, setconf_text: str) -> None:
    """Keys, peers and endpoints, through a pipe: `wg setconf IFNAME /dev/stdin`."""
    result = subprocess.run(["wg", "setconf", ifname, "/dev/stdin"], input=setconf_text, env=_ENV,
                            capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise NetnsError(f"wg setconf {ifname} failed: {_first_line(result.stderr)}")


def move(ipr: IPRoute, ifname: str, namespace: str) -> None:
    fd = os.open(netns.netns_path(namespace), os.O_RDONLY | os.O_CLOEXEC)
    try:
        ipr.link("set", index=netns.link_index(ifname), net_ns_fd=fd)
    finally:
        os.close(fd)


def configure_inside(ifname: str, addresses: Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface],
                     routes: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network], mtu: int,
                     ipv6: bool) -> None:
    """In the jail's namespace: lo and the tunnel up, its addresses, a route per AllowedIPs.

    IPv6 stays off unless the file gives the jail an IPv6 address.
    """
    for scope in ("all", "default", ifname):
        netns.write_sysctl(f"net/ipv6/conf/{scope}/disable_ipv6", "0" if ipv6 else "1")
    with netns.rtnl() as ipr:
        ipr.link("set", index=netns.link_index("lo"), state="up")
        index = netns.link_index(ifname)
        ipr.link("set", index=index, mtu=mtu)
        for address in addresses:
            extra = {"flags": _IFA_F_NODAD} if address.version == 6 else {}
            ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen, **extra)
        ipr.link("set", index=index, state="up")
        for route in routes:
            ipr.route("replace", dst=str(route), oif=index,
                      family=socket.AF_INET6 if route.version == 6 else socket.AF_INET)


def wait_ready(ifname: str, kind: str) -> None:
    """Return once the tunnel can carry traffic: wireguard-go has opened its UDP socket."""
    if kind == KERNEL:
        return
    deadline = time.monotonic() + READY_TIMEOUT
    while _uapi_get(ifname).get("listen_port", "0") == "0":
        if time.monotonic() > deadline:
            raise NetnsError(f"wireguard-go did not bring {ifname} up within {READY_TIMEOUT:.0f} s")
        time.sleep(0.01)


def remove(ipr: IPRoute, namespace: str, ifname: str) -> None:
    """Stop IFNAME's wireguard-go (its device goes with it), then delete the link wherever it is."""
    HANDSHAKES.forget(ifname)
    for pid in daemons().get(ifname, []):
        terminate(pid)
    netns.delete_link(ipr, ifname)  # a creation that failed before the move
    if netns.netns_path(namespace).exists():
        netns.run_in_namespace(namespace, lambda: _delete_here(ifname))


def _delete_here(ifname: str) -> None:
    with netns.rtnl() as ipr:
        netns.delete_link(ipr, ifname)


def present(namespace: str, ifname: str) -> bool:
    """Whether the jail's namespace holds its tunnel interface."""
    return netns.run_in_namespace(namespace, lambda: netns.link_index(ifname) is not None)


def sweep(prefix: str, live_ifnames: Iterable[str]) -> list[str]:
    """Stop wireguard-go daemons of this namespace serving PREFIX* interfaces no jail has;
    remove PREFIX* control sockets nothing answers on."""
    live = set(live_ifnames)
    removed = []
    for ifname, pids in sorted(daemons().items()):
        if ifname.startswith(prefix) and ifname not in live:
            for pid in pids:
                terminate(pid)
            removed.append(ifname)
    if SOCKET_DIR.is_dir():
        for path in sorted(SOCKET_DIR.glob(f"{prefix}*.sock")):
            ifname = path.name[:-len(".sock")]
            if ifname not in live and not _answers(ifname):
                path.unlink(missing_ok=True)
                removed.append(f"{path}")
    return removed


def daemons() -> dict[str, list[int]]:
    """wireguard-go processes of the calling thread's network namespace, by the interface they serve."""
    return processes(DAEMON, lambda args: args[-1].decode(errors="replace"))


def processes(program: str, ifname_of: Callable[[list[bytes]], str | None]) -> dict[str, list[int]]:
    """PROGRAM's processes of the calling thread's network namespace, by the interface
    ifname_of(their arguments) says they serve."""
    own = os.stat("/proc/thread-self/ns/net")
    found: dict[str, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")[:-1]
            if len(argv) < 2 or os.path.basename(argv[0]) != program.encode():
                continue
            ns = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue  # ended meanwhile
        ifname = ifname_of(argv[1:])
        if ifname is not None and (ns.st_dev, ns.st_ino) == (own.st_dev, own.st_ino):
            found.setdefault(ifname, []).append(int(entry.name))
    return found


def terminate(pid: int) -> None:
    """SIGTERM through a pidfd (a reused pid is never hit), then wait a moment for the end."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not select.select([pidfd], [], [], STOP_TIMEOUT)[0]:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], STOP_TIMEOUT)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


class HandshakeWatch:
    """Whether a WireGuard tunnel without a session is idle or failing, told from what it sends.

    WireGuard handshakes only when there is something to send, so a tunnel
    without PersistentKeepalive has no session after REJECT_AFTER of quiet:
    that is idle, not down. Handshake initiations count in the peer's sent
    bytes: sent bytes growing while no handshake succeeds mean the peer does
    not answer. The first look at a tunnel without a session cannot tell
    (it says idle and remembers what had been sent), except for one that has
    never had a handshake and has sent something.
    """

    def __init__(self) -> None:
        self._quiet: dict[str, tuple[int, int]] = {}  # ifname -> (latest handshake, bytes sent) when first seen stale

    def state(self, ifname: str, link_up: bool, handshake: int, tx_bytes: int, now: float) -> str:
        if not link_up or (handshake and now - handshake < REJECT_AFTER):
            self._quiet.pop(ifname, None)
            return UP if link_up else DOWN
        if not handshake and tx_bytes:
            return DOWN
        seen_handshake, seen_sent = self._quiet.setdefault(ifname, (handshake, tx_bytes))
        if seen_handshake != handshake:
            self._quiet[ifname] = (handshake, tx_bytes)
            return IDLE
        return DOWN if tx_bytes > seen_sent else IDLE

    def forget(self, ifname: str) -> None:
        self._quiet.pop(ifname, None)


HANDSHAKES = HandshakeWatch()


def status(namespace: str, ifname: str) -> dict:
    """The tunnel as `inspect` shows it: endpoint, latest handshake, bytes, state (up, idle or down).

    `wg show dump` runs inside the jail (the kernel's device answers there;
    wireguard-go's socket path is the same everywhere). Its first line holds
    the private key: it is dropped unread.
    """
    def show() -> tuple[bool, subprocess.CompletedProcess]:
        result = subprocess.run(["wg", "show", ifname, "dump"], env=_ENV, capture_output=True,
                                text=True, timeout=5)
        return netns.link_is_up(ifname), result

    link_up, result = netns.run_in_namespace(namespace, show)
    peers = result.stdout.splitlines()[1:] if result.returncode == 0 else []
    handshake, rx, tx, endpoints = 0, 0, 0, []
    for line in peers:
        fields = line.split("\t")
        if len(fields) >= 7:
            endpoints.append(fields[2])
            handshake = max(handshake, int(fields[4]))
            rx, tx = rx + int(fields[5]), tx + int(fields[6])
    state = HANDSHAKES.state(ifname, link_up and result.returncode == 0, handshake, tx, time.time())
    return {"endpoint": ",".join(endpoints), "latest_handshake": handshake, "rx_bytes": rx,
            "tx_bytes": tx, "link_up": link_up, "state": state, "up": state != DOWN}


def counters(namespace: str, ifname: str) -> dict[str, int]:
    """The tunnel interface's own counters: what the jail sent (tx) and got (rx)."""
    def read() -> dict[str, int]:
        with netns.rtnl() as ipr:
            index = netns.link_index(ifname)
            stats = ipr.get_links(index)[0].get_attr("IFLA_STATS64") if index else None
        if stats is None:
            return {}
        return {"tx_packets": stats["tx_packets"], "tx_bytes": stats["tx_bytes"],
                "rx_packets": stats["rx_packets"], "rx_bytes": stats["rx_bytes"],
                "dropped_packets": stats["tx_dropped"] + stats["tx_errors"], "dropped_bytes": 0}
    return netns.run_in_namespace(namespace, read)


def _uapi_get(ifname: str) -> dict[str, str]:
    """wireguard-go's answer to `get=1`, keys dropped (only its counters and port are read)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(SOCKET_DIR / f"{ifname}.sock"))
            sock.sendall(b"get=1\n\n")
            reply = b""
            while not reply.endswith(b"\n\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except OSError:
            return {}
    pairs = (line.split("=", 1) for line in reply.decode(errors="replace").splitlines() if "=" in line)
    return {key: value for key, value in pairs if not key.endswith("_key")}


def _answers(ifname: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(SOCKET_DIR / f"{ifname}.sock"))
        except OSError:
            return False
    return True


def _first_line(value: object) -> str:
    if isinstance(value, subprocess.CalledProcessError):
        value = value.stderr.decode(errors="replace") if isinstance(value.stderr, bytes) else value.stderr
    text = str(value or "").strip()
    return text.splitlines()[-1] if text else "no reason given"
