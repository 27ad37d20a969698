"""The lab's NAT-PMP server: Debian's miniupnpd (nftables build) in the VPN endpoint, the internet namespace.

It answers on the WireGuard server's side of the tunnel and forwards the
ports it maps from its external interface (EXT_IF), as a VPN provider's
gateway does. Behind that interface is the far internet: a namespace of its
own (`outside`, FAR_ADDR), whose connections to a forwarded port are what a
peer of a jailed torrent client would make (the lab's host cannot stand in:
what comes back to a --vpn jail's host from its own address is dropped
there). miniupnpd's chains live in a table of its own in the internet
namespace (TABLE), made here and removed with it, as is the forwarding it
needs there; nothing outside the lab's namespaces is touched.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .netns import netns_exec_argv
from .errors import LabError
from .process import POLL_INTERVAL, READY_TIMEOUT, run_checked, stop

TABLE = "miniupnpd"
EXT_IF, FAR_IF = "ajfar0", "ajfar1"  # the gateway's external link, in the internet and far namespaces
EXT_ADDR, FAR_ADDR = "192.0.2.65", "192.0.2.66"  # a /30 of the lab's documentation range
CHAINS = f"""
table inet {TABLE} {{
    chain forward {{ type filter hook forward priority 0; policy accept; jump miniupnpd; }}
    chain miniupnpd {{ }}
    chain prerouting {{ type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }}
    chain prerouting_miniupnpd {{ }}
    chain postrouting {{ type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }}
    chain postrouting_miniupnpd {{ }}
}}
"""


def config(ext_ifname: str, ext_address: str, listen_ifname: str, clients: str) -> str:
    """miniupnpd.conf: NAT-PMP only, ports 1024-65535 for the tunnel's clients, each for itself.

    ext_address: miniupnpd refuses a reserved one (documentation ranges included) and maps
    nothing from an interface that has only such: the lab's gateway claims a public address
    that exists only inside the lab (no route leads out of it).
    """
    return "\n".join([
        f"ext_ifname={ext_ifname}", f"ext_ip={ext_address}",
        f"listening_ip={listen_ifname}", "enable_natpmp=yes", "enable_upnp=no", "secure_mode=yes",
        f"upnp_table_name={TABLE}", f"upnp_nat_table_name={TABLE}",
        f"allow 1024-65535 {clients} 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535", ""])


@contextmanager
def outside(ns: str, far_ns: str) -> Iterator[str]:
    """The far namespace FAR_NS, linked to NS (the internet) by EXT_IF, routed through it; removed after.

    The link is deleted by name, not left to go with FAR_NS: a namespace is torn down by
    the kernel later, and its veth with it (the next test's EXT_IF found it still there).
    """
    _remove(ns, far_ns)  # a crashed run's
    run_checked(["ip", "netns", "add", far_ns])
    try:
        for argv in (["-n", ns, "link", "add", EXT_IF, "type", "veth", "peer", "name", FAR_IF, "netns", far_ns],
                     ["-n", ns, "address", "add", f"{EXT_ADDR}/30", "dev", EXT_IF],
                     ["-n", ns, "link", "set", EXT_IF, "up"],
                     ["-n", far_ns, "address", "add", f"{FAR_ADDR}/30", "dev", FAR_IF],
                     ["-n", far_ns, "link", "set", FAR_IF, "up"],
                     ["-n", far_ns, "route", "add", "default", "via", EXT_ADDR]):
            run_checked(["ip", *argv])
        yield far_ns
    finally:
        _remove(ns, far_ns)


def _remove(ns: str, far_ns: str) -> None:
    """EXT_IF (its peer goes with it at once) and FAR_NS, whichever exist."""
    subprocess.run(["ip", "-n", ns, "link", "delete", EXT_IF], capture_output=True)
    subprocess.run(["ip", "netns", "delete", far_ns], capture_output=True)


@contextmanager
def running(ns: str, workdir: Path, conf: str) -> Iterator[subprocess.Popen[bytes]]:
    """miniupnpd with `conf` in namespace NS, its table made first, forwarding on there; all undone after."""
    conf_path, pid_path, log_path = (workdir / f"miniupnpd.{kind}" for kind in ("conf", "pid", "log"))
    conf_path.write_text(conf)
    forwarding = run_checked(netns_exec_argv(ns, ["sysctl", "-n", "net.ipv4.ip_forward"])).strip()
    run_checked(netns_exec_argv(ns, ["nft", "-f", "-"]), input=CHAINS)
    run_checked(netns_exec_argv(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
    with log_path.open("wb") as log:  # -d: in the foreground, its log on stderr
        proc = subprocess.Popen(netns_exec_argv(ns, ["miniupnpd", "-d", "-f", str(conf_path), "-P", str(pid_path)]),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while b"Listening for NAT-PMP" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"miniupnpd did not start: {log_path.read_text(errors='replace').strip()!r}")
            time.sleep(POLL_INTERVAL)
        yield proc
    finally:
        stop(proc)
        run_checked(netns_exec_argv(ns, ["nft", "delete", "table", "inet", TABLE]))
        run_checked(netns_exec_argv(ns, ["sysctl", "-qw", f"net.ipv4.ip_forward={forwarding}"]))
