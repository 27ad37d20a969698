"""Network namespaces, links, addresses, routes, policy rules and sysctls.

Everything here runs in the network namespace of the calling thread (the
"host"); work inside a jail's namespace runs in a short-lived thread that
entered it with setns(2). Threads, not processes: entering a namespace costs
a system call, where pyroute2's own NetNS forks a child per socket.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

NETNS_DIR = Path("/run/netns")
JAIL_IFNAME = "eth0"
RT_TABLE_MAX = 0xFFFFFFFF

_CLONE_NEWNET = 0x40000000
_MS_REC = 0x4000
_MS_BIND = 0x1000
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


class NetnsError(RuntimeError):
    """A kernel operation on a namespace failed."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"{what}: {os.strerror(err)}")


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does.

    Namespaces bound under it then show up in every mount namespace that
    was copied from ours, e.g. inside `ip netns exec` or a launcher.
    """
    NETNS_DIR.mkdir(mode=0o755, exist_ok=True)
    if _libc.mount(b"", bytes(NETNS_DIR), b"none", _MS_SHARED | _MS_REC, None) == 0:
        return
    _check(_libc.mount(bytes(NETNS_DIR), bytes(NETNS_DIR), b"none", _MS_BIND | _MS_REC, None),
           "bind /run/netns")
    _check(_libc.mount(b"", bytes(NETNS_DIR), b"none", _MS_SHARED | _MS_REC, None),
           "share /run/netns")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def create_namespace(name: str) -> None:
    """Create the named namespace /run/netns/NAME (fails if it exists)."""
    _share_netns_dir()
    path = netns_path(name)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)

    def bind_new_namespace() -> None:
        _check(_libc.unshare(_CLONE_NEWNET), "unshare network namespace")
        own = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_libc.mount(own, bytes(path), b"none", _MS_BIND, None), f"bind {path}")

    try:
        _in_fresh_thread(bind_new_namespace)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def delete_namespace(name: str) -> None:
    """Unbind and remove /run/netns/NAME; a missing one is not an error."""
    path = netns_path(name)
    if _libc.umount2(bytes(path), _MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(-1, f"unmount {path}")
    path.unlink(missing_ok=True)


def list_namespaces(prefix: str) -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


NamespaceId = tuple[int, int]  # (st_dev, st_ino) of a namespace file


def namespace_id(path: str | Path) -> NamespaceId:
    """What identifies a namespace: the device and inode of its file (/run/netns/X, /proc/P/ns/net)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def namespace_pids(name: str) -> list[int]:
    """Pids of the processes whose network namespace is /run/netns/NAME."""
    return pids_by_namespace([name])[name]


def pids_by_namespace(names: Iterable[str]) -> dict[str, list[int]]:
    """Pids in each of the namespaces /run/netns/NAME, from one walk through /proc."""
    result: dict[str, list[int]] = {}
    wanted: dict[NamespaceId, str] = {}
    for name in names:
        result[name] = []
        try:
            wanted[namespace_id(netns_path(name))] = name
        except FileNotFoundError:
            continue
    if not wanted:
        return result
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            name = wanted.get(namespace_id(f"/proc/{entry.name}/ns/net"))
        except OSError:
            continue
        if name is not None:
            result[name].append(int(entry.name))
    return result


_NS_GET_USERNS = 0xB701  # ioctl: the user namespace that owns a namespace


def process_netns(pid: int) -> tuple[NamespaceId, bool]:
    """The network namespace of process `pid`, and whether our own user namespace owns it.

    A namespace owned by another user namespace was made by an unprivileged
    process (unshare -rn), from a jail or not: nobody can say where it leads.
    The caller pins the process with a pidfd (authz.identify).
    """
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner = fcntl.ioctl(fd, _NS_GET_USERNS)
        try:
            ours = namespace_id(f"/proc/self/fd/{owner}") == namespace_id("/proc/self/ns/user")
        finally:
            os.close(owner)
        return namespace_id(f"/proc/self/fd/{fd}"), ours
    finally:
        os.close(fd)


def signal_namespace(name: str, signum: int) -> int:
    """Send `signum` to every process in /run/netns/NAME; how many it reached."""
    try:
        wanted = namespace_id(netns_path(name))
    except FileNotFoundError:
        return 0
    return signal_members(namespace_pids(name), wanted, signum)


def signal_members(pids: Iterable[int], namespace: NamespaceId, signum: int) -> int:
    """Signal those of `pids` that are in `namespace`, each through a pidfd.

    The pids come from a walk through /proc and any of them may have ended
    and been reused since. A pidfd pins one process: it is opened first, the
    namespace is checked again by pid, and the signal goes to the pidfd. If
    the pid changed hands in between, the pidfd's process is gone and the
    signal fails (ESRCH): a recycled pid is never hit.
    """
    reached = 0
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        try:
            if namespace_id(f"/proc/{pid}/ns/net") == namespace:
                signal.pidfd_send_signal(pidfd, signum)
                reached += 1
        except OSError:
            pass  # ended meanwhile
        finally:
            os.close(pidfd)
    return reached


def run_in_namespace(name: str, fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread that entered the named network namespace."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)

    def entered() -> T:
        _check(_libc.setns(fd, _CLONE_NEWNET), f"enter namespace {name}")
        return fn()

    try:
        return _in_fresh_thread(entered)
    finally:
        os.close(fd)


def run_in_each(names: Iterable[str], fn: Callable[[], T]) -> dict[str, T]:
    """fn() in each named network namespace (those that exist), by name: one fresh thread entering
    them in turn, so a look at many jails costs a setns each, not a thread each."""
    def each() -> dict[str, T]:
        found = {}
        for name in names:
            try:
                fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                _check(_libc.setns(fd, _CLONE_NEWNET), f"enter namespace {name}")
                found[name] = fn()
            finally:
                os.close(fd)
        return found

    return _in_fresh_thread(each)


def _in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run fn in a thread that dies afterwards, so namespace changes die with it."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="appjail-netns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def write_sysctl(key: str, value: str) -> str:
    """Write /proc/sys/KEY in the calling thread's namespace; return the old value."""
    path = Path("/proc/sys") / key
    old = path.read_text().strip()
    if old != value:
        path.write_text(value)
    return old


def read_sysctl(key: str) -> str:
    return (Path("/proc/sys") / key).read_text().strip()


@contextmanager
def rtnl() -> Iterator[IPRoute]:
    """A netlink route socket in the calling thread's namespace."""
    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def link_index(ifname: str) -> int | None:
    """The interface's index in the calling thread's namespace (an ioctl, not a link dump)."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1


def link_is_up(ifname: str) -> bool:
    """Whether the interface exists and is up, in the calling thread's namespace."""
    request = struct.pack("16sh", ifname.encode()[:15], 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock, _SIOCGIFFLAGS, request)
        except OSError:
            return False  # no such interface
    return bool(struct.unpack("16sh", reply[:18])[1] & _IFF_UP)


def list_link_names() -> list[str]:
    """Interfaces of the calling thread's namespace, from /proc (a netlink dump decodes
    every link's statistics, which pyroute2 does slowly: this stays fast with 200 jails)."""
    lines = Path("/proc/thread-self/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines]


def create_veth(ipr: IPRoute, host_ifname: str, namespace: str) -> None:
    """A veth pair whose far end is born inside the jail as eth0."""
    fd = os.open(netns_path(namespace), os.O_RDONLY | os.O_CLOEXEC)
    try:
        ipr.link("add", ifname=host_ifname, kind="veth",
                 peer={"ifname": JAIL_IFNAME, "net_ns_fd": fd})
    finally:
        os.close(fd)


# a jail's host-side veth, cut off and renamed, while the kernel removes it
# with its namespace: the jail's own name is free again at once
RETIRED_PREFIX = "ajz"


def retire_link(ipr: IPRoute, ifname: str) -> None:
    """Take the link down and rename it RETIRED_PREFIX + random, in that order."""
    index = link_index(ifname)
    if index is None:
        return
    try:
        ipr.link("set", index=index, state="down")
        ipr.link("set", index=index, ifname=RETIRED_PREFIX + os.urandom(6).hex())
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def wait_until_gone(ipr: IPRoute, ifname: str, timeout: float = 3.0) -> bool:
    """Wait for a link the kernel is still tearing down (with its namespace) to go."""
    deadline = time.monotonic() + timeout
    while link_index(ifname) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def delete_link(ipr: IPRoute, ifname: str) -> None:
    index = link_index(ifname)
    if index is not None:
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise


def configure_host_end(ipr: IPRoute, ifname: str, address: str, prefixlen: int) -> None:
    """Address the host end and bring it up; IPv6 off so nothing v6 is routed in.

    Forwarding stays off (a new interface inherits conf/default, which may be
    on) until the jail's firewall is in place.
    """
    write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")
    write_sysctl(f"net/ipv4/conf/{ifname}/forwarding", "0")
    index = link_index(ifname)
    ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    ipr.link("set", index=index, state="up")


def configure_jail_side(address: str, prefixlen: int, gateway: str) -> None:
    """Inside the jail's namespace: IPv6 off, lo and eth0 up, default route."""
    for scope in ("all", "default"):
        write_sysctl(f"net/ipv6/conf/{scope}/disable_ipv6", "1")
    # the host's redirects (sent when a VPN jail's traffic turns back, see
    # set_vpn_table) must not leave stale routes behind in the jail
    for scope in ("all", "default", JAIL_IFNAME):
        write_sysctl(f"net/ipv4/conf/{scope}/accept_redirects", "0")
    with rtnl() as ipr:
        ipr.link("set", index=link_index("lo"), state="up")
        index = link_index(JAIL_IFNAME)
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


def ipv4_routes() -> Iterator[tuple[str, int, str]]:
    """(destination, prefix length, device) of the main table's IPv4 routes, from /proc."""
    for line in Path("/proc/thread-self/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        device, destination, mask = fields[0], int(fields[1], 16), int(fields[7], 16)
        yield (socket.inet_ntoa(destination.to_bytes(4, "little")),
               bin(mask).count("1"), device)


# metrics in a VPN jail's table: lower wins
VPN_METRIC, TURN_BACK_METRIC, UNREACHABLE_METRIC = 1, 2048, 4096


def set_vpn_table(ipr: IPRoute, table: int, vpn_ifname: str, jail_ifname: str) -> None:
    """A VPN jail's routing table, best route first.

    1. `default dev VPN`, while the VPN is up (the kernel deletes this route
       with its device, and refresh puts it back);
    2. `default dev JAIL_VETH`: without the VPN, traffic turns back toward
       the jail, so it crosses FORWARD, where the jail's chain drops and
       counts it: the kill switch shows in `inspect`. Even without any
       firewall rule it only goes back to the jail, never elsewhere;
    3. `unreachable default`, for when even the veth is gone.
    """
    _replace_route(ipr, dict(dst="0.0.0.0/0", table=table, type="unreachable",
                             priority=UNREACHABLE_METRIC))
    jail_index = link_index(jail_ifname)
    if jail_index is not None:
        _replace_route(ipr, dict(dst="0.0.0.0/0", table=table, oif=jail_index,
                                 priority=TURN_BACK_METRIC))
    index = link_index(vpn_ifname)
    if index is not None and link_is_up(vpn_ifname):
        _replace_route(ipr, dict(dst="0.0.0.0/0", table=table, oif=index, priority=VPN_METRIC))


def _replace_route(ipr: IPRoute, route: dict) -> None:
    try:
        ipr.route("replace", **route)
    except NetlinkError as exc:
        # the device went down between the check and the call: the
        # unreachable route keeps the jail closed until it comes back
        if exc.code not in (errno.ENETDOWN, errno.ENODEV):
            raise


def route_tables(ipr: IPRoute) -> set[int]:
    """Ids of every table that holds an IPv4 route."""
    return {route.get_attr("RTA_TABLE") for route in ipr.get_routes(family=socket.AF_INET, table=0)}


def flush_table(ipr: IPRoute, table: int) -> None:
    for route in ipr.get_routes(family=socket.AF_INET, table=table):
        if route.get_attr("RTA_TABLE") == table:
            try:
                ipr.route("del", **_route_key(route, table))
            except NetlinkError as exc:
                if exc.code != errno.ESRCH:
                    raise


def _route_key(route, table: int) -> dict:
    key = dict(dst=f"{route.get('dst') or '0.0.0.0'}/{route['dst_len']}", table=table,
               type=route["type"])
    priority = route.get("priority")
    if priority is not None:
        key["priority"] = priority
    return key


def add_policy_rule(ipr: IPRoute, iifname: str, table: int, priority: int) -> None:
    """Send everything that enters from iifname to table."""
    ipr.rule("add", family=socket.AF_INET, iifname=iifname, table=table, priority=priority)


def policy_rules(ipr: IPRoute, priority: int) -> list[tuple[str | None, int]]:
    """(iifname, table) of our IPv4 policy rules at the given priority."""
    found = []
    for rule in ipr.get_rules(family=socket.AF_INET):
        if rule.get("priority") == priority:
            table = rule.get("table")
            if table == 252:  # RT_TABLE_COMPAT: the real id is in FRA_TABLE
                table = rule.get("FRA_TABLE")
            found.append((rule.get("iifname"), table))
    return found


def delete_policy_rule(ipr: IPRoute, iifname: str | None, table: int, priority: int) -> None:
    key = dict(family=socket.AF_INET, table=table, priority=priority)
    if iifname is not None:
        key["iifname"] = iifname
    try:
        ipr.rule("del", **key)
    except NetlinkError as exc:
        if exc.code != errno.ENOENT:
            raise
