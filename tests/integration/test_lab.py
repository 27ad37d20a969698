"""The lab itself: simulated host, internet, DNS, WireGuard tunnel, and clean teardown."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appjail.lab import Lab, LabError, SetnsError, enter_netns, in_netns, wireguard
from appjail.lab.process import alive, child_env

TOOLS = ("ip", "wireguard-go", "wg", "tcpdump", "curl", "dig")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root: it creates network namespaces"),
    pytest.mark.skipif(not all(map(shutil.which, TOOLS)), reason=f"the lab needs all of {', '.join(TOOLS)} installed"),
]


def names(tag: str) -> tuple[str, str]:
    """A (prefix, wg_ifname) pair unique to this test process."""
    return f"lt{os.getpid()}{tag}", f"wgt{os.getpid()}{tag}"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    prefix, wg_ifname = names("m")
    with Lab(prefix=prefix, wg_ifname=wg_ifname) as lab:
        yield lab


def run(lab: Lab, ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return lab.run_in(ns, argv, capture_output=True, text=True, timeout=30)


def curl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return run(lab, lab.host_ns, "curl", "-sS", "--max-time", "10", *args)


def dig(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return run(lab, lab.host_ns, "dig", "+time=2", "+tries=1", *args)


def netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def ip_netns_pids(ns: str) -> list[int]:
    return [int(pid) for pid in subprocess.check_output(["ip", "netns", "pids", ns]).split()]


def lab_leftovers(prefix: str, wg_ifnames: list[str]) -> list[str]:
    namespaces = [p.name for p in Path("/run/netns").glob(f"{prefix}-*")]
    sockets = [str(wireguard.socket_path(n)) for n in wg_ifnames if wireguard.socket_path(n).exists()]
    return namespaces + sockets


def handshake_age(lab: Lab) -> float:
    out = run(lab, lab.host_ns, "wg", "show", lab.wg_ifname, "latest-handshakes").stdout.split()
    return time.time() - int(out[1]) if len(out) == 2 and out[1] != "0" else float("inf")


# --- the simulated internet ---------------------------------------------------


def test_http_sees_host_uplink_address(lab: Lab) -> None:
    result = curl(lab, f"http://{Lab.SERVER_ADDR}/")
    assert result.stdout == f"client={Lab.HOST_UPLINK_ADDR}\n", result.stderr
    assert {"client": Lab.HOST_UPLINK_ADDR, "path": "/"} in lab.http_log()


def test_http_answers_ipv6(lab: Lab) -> None:
    result = curl(lab, "-g", f"http://[{Lab.SERVER6_ADDR}]/")
    assert result.stdout == f"client={Lab.HOST_UPLINK_ADDR6}\n", result.stderr


def test_http_bytes_exact_and_throttled(lab: Lab) -> None:
    result = run(lab, lab.host_ns, "sh", "-c", f"curl -sS http://{Lab.SERVER_ADDR}/bytes/1000000 | wc -c")
    assert result.stdout.strip() == "1000000", result.stderr
    started = time.monotonic()
    result = curl(lab, "-o", "/dev/null", "-w", "%{size_download}", f"http://{Lab.SERVER_ADDR}/bytes/2000?rate=4000")
    assert result.stdout == "2000"
    assert time.monotonic() - started >= 0.35  # 2000 bytes at 4000 B/s: the last chunk leaves at 0.4 s
    assert curl(lab, "-o", "/dev/null", "-w", "%{http_code}", f"http://{Lab.SERVER_ADDR}/nope").stdout == "404"


def test_http_slow_keeps_connection_open(lab: Lab) -> None:
    result = curl(lab, "--max-time", "2.5", f"http://{Lab.SERVER_ADDR}/slow")
    assert result.returncode == 28  # curl's "operation timed out": still open after 2.5 s
    assert 2 <= len(result.stdout) <= 4


def test_dns_answers_zone_and_logs(lab: Lab) -> None:
    assert dig(lab, f"@{Lab.DNS_ADDR}", "foo.lab.test", "+short").stdout == f"{Lab.SERVER_ADDR}\n"
    assert dig(lab, f"@{Lab.DNS_ADDR}", "Bar.Lab.Test", "+short", "+tcp").stdout == f"{Lab.SERVER_ADDR}\n"
    aaaa = dig(lab, f"@{Lab.DNS_ADDR}", "foo.lab.test", "AAAA").stdout
    assert "status: NOERROR" in aaaa and "ANSWER: 0" in aaaa
    assert "status: NXDOMAIN" in dig(lab, f"@{Lab.DNS_ADDR}", "example.com").stdout
    assert "status: NXDOMAIN" in dig(lab, f"@{Lab.DNS_ADDR}", "foo.lab.test", "MX").stdout
    log = lab.dns_log()
    assert {"client": Lab.HOST_UPLINK_ADDR, "name": "foo.lab.test.", "type": "A"} in log
    assert {"client": Lab.HOST_UPLINK_ADDR, "name": "bar.lab.test.", "type": "A"} in log
    assert {"client": Lab.HOST_UPLINK_ADDR, "name": "example.com.", "type": "A"} in log


def test_dns_survives_garbage(lab: Lab) -> None:
    garbage = [b"", b"\x00", os.urandom(11), os.urandom(200), struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x3f"]
    with in_netns(lab.host_ns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet in garbage:
            sock.sendto(packet, (Lab.DNS_ADDR, 53))
        with socket.create_connection((Lab.DNS_ADDR, 53), timeout=5) as tcp:
            tcp.sendall(b"\x00\x05junk")
    assert dig(lab, f"@{Lab.DNS_ADDR}", "after.lab.test", "+short").stdout == f"{Lab.SERVER_ADDR}\n"


# --- WireGuard ----------------------------------------------------------------


def assert_tunnel_works(lab: Lab) -> None:
    route = run(lab, lab.host_ns, "ip", "route", "get", Lab.WG_SERVER_TUNNEL_ADDR).stdout
    assert f"dev {lab.wg_ifname} " in route
    # Bound to the interface, curl bypasses the default route: the uplink sees the tunnel address.
    result = curl(lab, "--interface", lab.wg_ifname, f"http://{Lab.SERVER_ADDR}/")
    assert result.stdout == f"client={Lab.WG_CLIENT_TUNNEL_ADDR}\n", result.stderr
    with in_netns(lab.host_ns), pytest.raises(ConnectionRefusedError):  # the server side's kernel answers
        socket.create_connection((Lab.WG_SERVER_TUNNEL_ADDR, 9), timeout=5).close()
    assert handshake_age(lab) < 60


def test_tunnel(lab: Lab) -> None:
    assert_tunnel_works(lab)


def test_wg_down_up(lab: Lab) -> None:
    lab.wg_down()
    try:
        assert curl(lab, "--max-time", "2", "--interface", lab.wg_ifname, f"http://{Lab.SERVER_ADDR}/").returncode != 0
    finally:
        lab.wg_up()
    assert_tunnel_works(lab)


def test_wg_delete_create_cycle(lab: Lab) -> None:
    daemons = [pid for pid in ip_netns_pids(lab.host_ns) if wireguard.interface_of(pid) == lab.wg_ifname]
    assert len(daemons) == 1
    lab.wg_delete()
    assert run(lab, lab.host_ns, "ip", "link", "show", lab.wg_ifname).returncode != 0
    assert not alive(daemons[0])
    assert not wireguard.socket_path(lab.wg_ifname).exists()
    lab.wg_delete()  # twice is harmless
    lab.wg_create()
    with pytest.raises(LabError):
        lab.wg_create()
    assert_tunnel_works(lab)


def test_wg_create_after_interface_deleted_from_outside(lab: Lab) -> None:
    subprocess.run(["ip", "-n", lab.host_ns, "link", "delete", lab.wg_ifname], check=True)
    lab.wg_create()
    assert_tunnel_works(lab)


# --- helpers ------------------------------------------------------------------


def test_run_in_changes_only_the_network_namespace(lab: Lab) -> None:
    result = run(lab, lab.host_ns, "readlink", "/proc/self/ns/net", "/proc/self/ns/mnt")
    net, mnt = result.stdout.split()
    assert net == f"net:[{netns_inode(f'/run/netns/{lab.host_ns}')}]"
    assert mnt == os.readlink("/proc/self/ns/mnt")


def test_in_netns_restores_and_enter_netns_moves_thread(lab: Lab) -> None:
    own = netns_inode("/proc/thread-self/ns/net")
    with in_netns(lab.uplink_ns):
        assert netns_inode("/proc/thread-self/ns/net") == netns_inode(f"/run/netns/{lab.uplink_ns}")
    assert netns_inode("/proc/thread-self/ns/net") == own

    seen: list[int] = []

    def worker() -> None:  # a thread of its own: setns moves only the calling thread
        enter_netns(lab.host_ns)
        seen.append(netns_inode("/proc/thread-self/ns/net"))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [netns_inode(f"/run/netns/{lab.host_ns}")]
    assert netns_inode("/proc/thread-self/ns/net") == own
    with pytest.raises(SetnsError):
        enter_netns("no-such-netns-for-the-lab")


def test_dns_trap(lab: Lab) -> None:
    trap = lab.start_dns_trap(["127.0.0.53", "0.0.0.0"])
    try:
        assert dig(lab, "@127.0.0.53", "a.lab.test", "+short").stdout == f"{Lab.SERVER_ADDR}\n"
        assert dig(lab, "@127.0.0.53", "b.lab.test", "+short", "+tcp").stdout == f"{Lab.SERVER_ADDR}\n"
        assert dig(lab, f"@{Lab.HOST_UPLINK_ADDR}", "c.lab.test", "+short").stdout == f"{Lab.SERVER_ADDR}\n"
        assert [entry["name"] for entry in trap.log()] == ["a.lab.test.", "b.lab.test.", "c.lab.test."]
    finally:
        trap.stop()
    assert dig(lab, "@127.0.0.53", "d.lab.test").returncode != 0
    assert all(entry["name"] != "a.lab.test." for entry in lab.dns_log())


def test_capture(lab: Lab) -> None:
    capture = lab.capture(lab.host_uplink_if, lab.host_ns)
    curl(lab, f"http://{Lab.SERVER_ADDR}/captured")
    lines = capture.stop()
    assert any(f"{Lab.HOST_UPLINK_ADDR}." in line and f"> {Lab.SERVER_ADDR}.80:" in line for line in lines), lines


# --- life cycle -----------------------------------------------------------------


def test_two_labs_at_once_and_close_leaves_nothing() -> None:
    labs = [Lab(*names(tag)) for tag in "ab"]
    started = time.monotonic()
    for lab in labs:
        lab.start()
    try:
        assert time.monotonic() - started < 10
        pids = [pid for lab in labs for ns in (lab.host_ns, lab.uplink_ns) for pid in ip_netns_pids(ns)]
        assert len(pids) >= 8  # per lab: HTTP, DNS and two wireguard-go
        for lab in labs:
            assert_tunnel_works(lab)
            assert curl(lab, f"http://{Lab.SERVER_ADDR}/").stdout == f"client={Lab.HOST_UPLINK_ADDR}\n"
    finally:
        for lab in labs:
            lab.close()
    for lab in labs:
        assert lab_leftovers(lab.prefix, [lab.wg_ifname, lab.wg_server_ifname]) == []
        assert not lab.workdir.exists()
        lab.close()  # idempotent
    assert not [pid for pid in pids if alive(pid)]


def test_failed_start_cleans_up() -> None:
    prefix, wg_ifname = names("f")
    taken = wireguard.socket_path(wg_ifname)
    taken.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:  # as if another wireguard-go had the name
        squatter.bind(str(taken))
        squatter.listen()
        try:
            lab = Lab(prefix, wg_ifname)
            with pytest.raises(LabError, match="already runs"):
                lab.start()
            assert lab_leftovers(prefix, [lab.wg_server_ifname]) == []
            assert taken.exists()  # not ours to remove
        finally:
            taken.unlink()


def test_cleanup_stale_after_crash() -> None:
    prefix, wg_ifname = names("c")
    script = f"from appjail.lab import Lab; Lab({prefix!r}, {wg_ifname!r}).start(); print('up', flush=True); input()"
    crashed = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env()
    )
    try:
        assert crashed.stdout is not None and crashed.stdout.readline() == b"up\n"
    finally:
        crashed.kill()
        crashed.wait()
    lab = Lab(prefix, wg_ifname)
    assert lab_leftovers(prefix, [wg_ifname]) != []
    with pytest.raises(LabError, match="cleanup_stale"):
        lab.start()
    assert len(lab_leftovers(prefix, [wg_ifname])) == 3  # the failed start left the crashed lab's things alone
    Lab.cleanup_stale(prefix)
    assert lab_leftovers(prefix, [wg_ifname, lab.wg_server_ifname]) == []
    assert not list(Path(tempfile.gettempdir()).glob(f"appjail-lab-{prefix}-*"))
    with Lab(prefix, wg_ifname) as fresh:
        assert_tunnel_works(fresh)


@pytest.mark.parametrize("prefix", ["", "aj-x", "UPPER", "twelve-chars"])
def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        Lab(prefix)
