"""A jail's own WireGuard interface: made in the host namespace, moved into the jail.

The interface is born in the helper's namespace, so its encrypted UDP socket
lives there, then moved into the jail, where it is the only way out. The
kernel's WireGuard is used where it exists; otherwise `wireguard-go`, whose
process and socket stay in the host namespace (the TUN device moves, its
descriptor stays with the process; wireguard-go notices the device going
up in the jail by polling the descriptor, within a second). wireguard-go
runs as the tunnel user with CAP_NET_ADMIN alone (tundaemon), on a device
and control socket the helper made, and is known by its record.

Keys reach WireGuard only through a pipe to `wg setconf IFACE /dev/stdin`:
never an argument, never a file. A tunnel interface is named like the
jail's namespace, `aj-NAME`; wireguard-go's control socket is then
/var/run/wireguard/aj-NAME.sock, machine-wide.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...wgconf import WireGuardConfig
from . import tundaemon
from ..kernel import netns
from ..kernel.netns import NetnsError

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
_IFF_LOWER_UP = 0x10000
Interfaces = Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface]
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def create(ipr: IPRoute, ifname: str) -> str:
    """A WireGuard interface IFNAME in the calling thread's namespace; which kind it is."""
    try:
        ipr.link("add", ifname=ifname, kind="wireguard")
        return KERNEL
    except NetlinkError as exc:
        if exc.code != errno.EOPNOTSUPP:  # "Unknown device type": no kernel module
            raise
    if _answers(ifname) or tundaemon.recorded(DAEMON, ifname):
        raise NetnsError(f"a wireguard-go for {ifname} already runs")
    _start_userspace(ifname)
    return USERSPACE


def _start_userspace(ifname: str) -> None:
    """wireguard-go as the tunnel user with CAP_NET_ADMIN alone (it sets its device's MTU), in the
    foreground of its own session: the helper makes its device and control socket and hands them over
    (WG_TUN_FD, WG_UAPI_FD), so it needs no root's file and no /dev/net/tun of its own."""
    command = tundaemon.command([DAEMON, "--foreground", ifname], ("net_admin",))
    tun = tundaemon.open_tun(ifname, _userspace_tun_flags())
    try:
        with _uapi_listener(ifname) as uapi:
            env = {**_ENV, "WG_TUN_FD": str(tun), "WG_UAPI_FD": str(uapi.fileno())}
            proc = subprocess.Popen(command, env=env, pass_fds=(tun, uapi.fileno()), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise NetnsError(f"wireguard-go could not create {ifname}: {exc.strerror}") from None
    finally:
        os.close(tun)
    tundaemon.record(DAEMON, ifname, tundaemon.started(proc.pid))


@functools.lru_cache(maxsize=1)
def _userspace_tun_flags() -> int:
    """How this wireguard-go reads a device it is handed: releases of 2022 and before with the packet
    information header, later ones with a virtio header (what each makes when it opens one itself)."""
    try:
        version = subprocess.run([DAEMON, "--version"], env=_ENV, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"wireguard-go does not run: {exc}") from None
    release = re.search(r"v?0\.0\.(\d{8})", version)
    if release is None:
        raise NetnsError(f"wireguard-go's version is not one appjail knows: {version.strip()[:60]!r}")
    if release.group(1) < "20230101":
        return tundaemon.IFF_TUN
    return tundaemon.IFF_TUN | tundaemon.IFF_NO_PI | tundaemon.IFF_VNET_HDR


def _uapi_listener(ifname: str) -> socket.socket:
    """wireguard-go's control socket, SOCKET_DIR/IFNAME.sock, root's: `wg` finds it there."""
    SOCKET_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = SOCKET_DIR / f"{ifname}.sock"
    path.unlink(missing_ok=True)  # nothing answers on it (checked by the caller)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        os.chmod(path, 0o755)  # wireguard-go watches it (inotify needs read) and ends when it goes
        listener.listen(16)
    except BaseException:
        listener.close()
        raise
    return listener


def make(ipr: IPRoute, namespace: str, ifname: str, config: WireGuardConfig) -> str:
    """A tunnel jail's interface IFNAME: made here, keyed, moved into NAMESPACE and configured there,
    ready to carry traffic; the implementation serving it (KERNEL or wireguard-go). Undone by remove."""
    kind = create(ipr, ifname)
    configure(ifname, config.setconf_text())
    place(ipr, ifname, namespace, config.addresses, config.routes(), config.mtu, config.ipv6)
    wait_ready(ifname, kind)
    return kind


def place(ipr: IPRoute, ifname: str, namespace: str, addresses: Interfaces, routes: Networks, mtu: int,
          ipv6: bool) -> None:
    """A tunnel's device moved from here into the jail NAMESPACE (if it is here: an OpenVPN device may be
    there already) and configured there; WireGuard's and OpenVPN's alike."""
    if netns.link_index(ifname) is not None:
        move(ipr, ifname, namespace)
    netns.run_in_namespace(namespace, lambda: configure_inside(ifname, addresses, routes, mtu, ipv6))


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


def move_out(ifname: str, namespace: str) -> None:
    """IFNAME from the jail NAMESPACE back into the calling thread's namespace, if it is there."""
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def move_here() -> None:
        with netns.rtnl() as ipr:
            index = netns.link_index(ifname)
            if index is not None:
                ipr.link("set", index=index, net_ns_fd=fd)
    try:
        if netns.netns_path(namespace).exists():
            netns.run_in_namespace(namespace, move_here)
    finally:
        os.close(fd)


def configure_inside(ifname: str, addresses: Interfaces, routes: Networks, mtu: int, ipv6: bool) -> None:
    """In the jail's namespace: lo and the tunnel up, its addresses (and no other), a route per AllowedIPs.

    IPv6 stays off unless the file gives the jail an IPv6 address. Done
    again on a device already configured (an OpenVPN reconnection), it
    leaves it as if made anew.
    """
    for scope in ("all", "default", ifname):
        netns.write_sysctl(f"net/ipv6/conf/{scope}/disable_ipv6", "0" if ipv6 else "1")
    with netns.rtnl() as ipr:
        ipr.link("set", index=netns.link_index("lo"), state="up")
        index = netns.link_index(ifname)
        ipr.link("set", index=index, mtu=mtu)
        wanted = {(str(address.ip), address.network.prefixlen) for address in addresses}
        present = {(entry.get_attr("IFA_ADDRESS"), entry["prefixlen"]) for entry in ipr.get_addr(index=index)
                   if entry["scope"] == 0}
        for address, prefixlen in present - wanted:
            ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        for address in addresses:
            if (str(address.ip), address.network.prefixlen) in present:
                continue
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
    tundaemon.stop(DAEMON, ifname)
    (SOCKET_DIR / f"{ifname}.sock").unlink(missing_ok=True)  # the helper made it: wireguard-go leaves it
    delete_device(ipr, namespace, ifname)


def delete_device(ipr: IPRoute, namespace: str, ifname: str) -> None:
    """IFNAME in the calling thread's namespace (a creation that failed before the move) and in the jail's."""
    netns.delete_link(ipr, ifname)
    if netns.netns_path(namespace).exists():
        netns.run_in_namespace(namespace, lambda: _delete_here(ifname))


def delete_devices(ifnames: Iterable[str]) -> None:
    """Swept tunnels' devices, wherever they are (a jail's namespace is named like its tunnel)."""
    with netns.rtnl() as ipr:
        for ifname in ifnames:
            delete_device(ipr, ifname, ifname)


def _delete_here(ifname: str) -> None:
    with netns.rtnl() as ipr:
        netns.delete_link(ipr, ifname)


def daemon_pid(ifname: str) -> int | None:
    """IFNAME's wireguard-go (None: the kernel's WireGuard, or it ended)."""
    identity = tundaemon.recorded(DAEMON, ifname)
    return identity.pid if identity is not None else None


def present(namespace: str, ifname: str) -> bool:
    """Whether the jail's namespace holds its tunnel interface, alive: a tun device no daemon holds (an
    ended openvpn's, which outlives it) is not."""
    return netns.run_in_namespace(namespace, lambda: _alive(ifname))


def _alive(ifname: str) -> bool:
    with netns.rtnl() as ipr:
        index = netns.link_index(ifname)
        if index is None:
            return False
        link = ipr.get_links(index)[0]
        info = link.get_attr("IFLA_LINKINFO")
        return info is None or info.get_attr("IFLA_INFO_KIND") != "tun" or bool(link["flags"] & _IFF_LOWER_UP)


def sweep(prefix: str, live_ifnames: Iterable[str]) -> list[str]:
    """Stop wireguard-go daemons serving PREFIX* interfaces no jail has, and the tunnel user's unrecorded
    processes; remove PREFIX* control sockets nothing answers on."""
    live = set(live_ifnames)
    removed = tundaemon.sweep(DAEMON, prefix, live)
    if SOCKET_DIR.is_dir():
        for path in sorted(SOCKET_DIR.glob(f"{prefix}*.sock")):
            ifname = path.name[:-len(".sock")]
            if ifname not in live and not _answers(ifname):
                path.unlink(missing_ok=True)
                removed.append(f"{path}")
    return removed


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
