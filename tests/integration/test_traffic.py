"""Seeing and shaping a jail's traffic through the helper: counters, connections,
published ports, denied ranges, and the signals the tray listens to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from appjail.helper.firewall import traffic
from appjail.helper.kernel.netns import list_namespaces
from appjail.lab import in_netns

from .helperlab import (DNS, MEMBER, OTHER_MEMBER, appjail, appjail_argv, signal_listener, signals_seen,
                        user_popen_kwargs, wait_until)

DOWNLOAD = 200_000


def inspect_json(helper, name: str, user: str = MEMBER) -> dict:
    result = appjail(helper, user, "inspect", "--json", name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def keep_jail(helper, name: str, *options: str) -> None:
    result = appjail(helper, MEMBER, "run", "--keep", "--name", name, "--dns", DNS, *options, "--", "true")
    assert result.returncode == 0, result.stderr


def test_counters_and_connections_follow_a_download(helper, lab):
    keep_jail(helper, "dl")
    fetched = appjail(helper, MEMBER, "run", "--name", "dl", "--", "curl", "-sS", "-o", "/dev/null",
                      "-w", "%{size_download}", f"http://{lab.SERVER_ADDR}/bytes/{DOWNLOAD}")
    assert fetched.stdout == str(DOWNLOAD), fetched.stderr
    jail = inspect_json(helper, "dl")
    counters = jail["counters"]
    assert counters["rx_bytes"] >= DOWNLOAD and counters["tx_packets"] > 0, counters
    assert set(counters) == {"tx_packets", "tx_bytes", "rx_packets", "rx_bytes",
                             "dropped_packets", "dropped_bytes"}
    assert {"name", "owner_uid", "netns", "address", "vpn", "dns", "pids", "connections"} <= set(jail)
    assert jail["vpn"] is None

    slow = subprocess.Popen(appjail_argv("run", "--name", "dl", "--", "curl", "-sS", "-o", "/dev/null",
                                         f"http://{lab.SERVER_ADDR}/bytes/{DOWNLOAD}?rate=20000"),
                            stdin=subprocess.DEVNULL, **user_popen_kwargs(MEMBER, helper.bus_address))
    try:
        def downloading() -> list[dict]:
            return [c for c in inspect_json(helper, "dl")["connections"]
                    if (c["proto"], c["dst"], c["dport"]) == ("tcp", lab.SERVER_ADDR, 80)
                    and c["state"] == "ESTABLISHED"]
        assert wait_until(downloading, 10)
        assert wait_until(lambda: downloading() and downloading()[0]["rx_bytes"] > 20_000, 10)
    finally:
        slow.kill()
        slow.wait()
    listed = [j for j in json.loads(appjail(helper, MEMBER, "ls", "--json").stdout) if j["name"] == "dl"]
    assert listed[0]["counters"]["rx_bytes"] >= DOWNLOAD and "connections" not in listed[0]


def test_a_stopped_jails_address_comes_back_neither_at_once_nor_with_its_connections(helper, lab):
    keep_jail(helper, "first")
    address = inspect_json(helper, "first")["address"]
    slow = subprocess.Popen(appjail_argv("run", "--name", "first", "--", "curl", "-sS", "-o", "/dev/null",
                                         f"http://{lab.SERVER_ADDR}/bytes/{DOWNLOAD}?rate=20000"),
                            stdin=subprocess.DEVNULL, **user_popen_kwargs(MEMBER, helper.bus_address))
    try:
        assert wait_until(lambda: any(c["state"] == "ESTABLISHED"
                                      for c in inspect_json(helper, "first")["connections"]), 10)
        assert inspect_json(helper, "first")["connections_cut"] is False, "the lab's table is read whole"
        assert appjail(helper, MEMBER, "stop", "first").returncode == 0
    finally:
        slow.kill()
        slow.wait()
    with in_netns(lab.host_ns):
        # forgotten from a thread of the helper's: the pool holds the address back meanwhile
        assert wait_until(lambda: traffic.connections(address) == ([], False), 5)
    second = appjail(helper, OTHER_MEMBER, "run", "--keep", "--name", "second", "--dns", DNS, "--", "true")
    assert second.returncode == 0, second.stderr
    assert inspect_json(helper, "second", OTHER_MEMBER)["address"] != address
    assert appjail(helper, OTHER_MEMBER, "stop", "second").returncode == 0


def test_kill_switch_drops_are_counted_and_explained(helper, lab):
    keep_jail(helper, "ks", "--vpn", lab.wg_ifname)
    before = inspect_json(helper, "ks")["counters"]["dropped_packets"]
    lab.wg_down()
    try:
        blocked = appjail(helper, MEMBER, "run", "--name", "ks", "--", "curl", "-sS", "--max-time", "2",
                          f"http://{lab.SERVER_ADDR}/")
        assert blocked.returncode != 0
        jail = inspect_json(helper, "ks")
        assert jail["counters"]["dropped_packets"] > before and jail["vpn_up"] is False
        human = appjail(helper, MEMBER, "inspect", "ks")
        assert "KILL SWITCH" in human.stdout and "wg0 is down or missing" in human.stdout, human.stdout
    finally:
        lab.wg_up()
    assert "KILL SWITCH" not in appjail(helper, MEMBER, "inspect", "ks").stdout


def serve(helper, name: str, port: str, content: str, user: str = MEMBER,
          options: tuple[str, ...] = ()) -> subprocess.Popen:
    """`python3 -m http.server 8080` in jail NAME published as PORT, serving CONTENT, by USER."""
    directory = Path(os.path.expanduser(f"~{MEMBER}")) / name
    directory.mkdir(exist_ok=True)
    (directory / "index.html").write_text(content)
    os.chown(directory, *(os.stat(directory.parent)[4:6]))
    return subprocess.Popen(
        appjail_argv("run", "--name", name, "--dns", DNS, "--publish", f"{port}:8080", *options,
                     "--", "python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", str(directory)),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        **user_popen_kwargs(user, helper.bus_address))


def fetch_from(lab, ns: str, url: str) -> str:
    result = lab.run_in(ns, ["curl", "-sS", "--max-time", "5", url], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else f"error: {result.stderr.strip()}"


def test_two_servers_on_one_port_in_two_jails_published_on_two_host_ports(helper, lab):
    first, second = serve(helper, "web1", "6000", "first\n"), serve(helper, "web2", "6001", "second\n")
    host = lab.HOST_UPLINK_ADDR
    try:
        assert wait_until(lambda: fetch_from(lab, lab.uplink_ns, f"http://{host}:6000/") == "first\n", 15)
        assert wait_until(lambda: fetch_from(lab, lab.uplink_ns, f"http://{host}:6001/") == "second\n", 15)
        # the host itself, at its own address
        assert fetch_from(lab, lab.host_ns, f"http://{host}:6001/") == "second\n"
        again = appjail(helper, MEMBER, "run", "--name", "web3", "--publish", "6000:8080", "--", "true")
        assert again.returncode == 125 and "already published by another jail (web1)" in again.stderr
        assert inspect_json(helper, "web1")["counters"]["rx_packets"] > 0
    finally:
        for server in (first, second):
            server.terminate()
            server.wait(timeout=10)
    assert wait_until(lambda: list_namespaces("aj-") == [], 10)


def host_listener(lab, port: int) -> subprocess.Popen:
    """A socket listening on PORT of the lab's host, up once it has said so."""
    listener = lab.popen_in(lab.host_ns, [sys.executable, "-c",
                                          "import socket,time;s=socket.socket();"
                                          f"s.bind(('0.0.0.0',{port}));s.listen();print('up',flush=True);"
                                          "time.sleep(60)"], stdout=subprocess.PIPE)
    assert listener.stdout.readline() == b"up\n"
    return listener


def test_a_port_the_host_uses_cannot_be_published(helper, lab):
    listener = host_listener(lab, 6002)
    try:
        taken = appjail(helper, MEMBER, "run", "--publish", "6002:8080", "--", "true")
        assert taken.returncode == 125 and "already in use on the host" in taken.stderr
    finally:
        listener.kill()
        listener.wait()
    assert list_namespaces("aj-") == []


def test_a_privileged_host_port_needs_manage(helper, lab):
    refused = appjail(helper, MEMBER, "run", "--dns", DNS, "--publish", "80:8080", "--", "true")
    assert refused.returncode == 125, refused.stderr
    assert refused.stderr.strip().endswith(
        "publishing privileged host port 80/tcp needs polkit action org.appjail.manage"), refused.stderr
    assert list_namespaces("aj-") == []
    # polkit authorises uid 0 for every action, org.appjail.manage included
    server = serve(helper, "web80", "80", "eighty\n", user="root")
    try:
        assert wait_until(lambda: fetch_from(lab, lab.uplink_ns, f"http://{lab.HOST_UPLINK_ADDR}/")
                          == "eighty\n", 15)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert wait_until(lambda: list_namespaces("aj-") == [], 10)


def host_http_server(lab, port: int) -> subprocess.Popen:
    """`python3 -m http.server PORT` on the lab's host, as a service that starts later would."""
    return lab.popen_in(lab.host_ns, [sys.executable, "-u", "-m", "http.server", str(port)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_held(lab, port: int) -> None:
    """A server the host starts on PORT fails: the helper holds it."""
    late = host_http_server(lab, port)
    try:
        _, error = late.communicate(timeout=10)
    finally:
        late.kill()
    assert late.returncode != 0 and "[Errno 98] Address already in use" in error, error


def test_a_published_port_is_held_until_the_jail_is_gone(helper, lab):
    keep_jail(helper, "held", "--publish", "6000:8080")
    assert_held(lab, 6000)
    # loopback is not published: turned away at once, not left hanging
    refused = lab.run_in(lab.host_ns, ["curl", "-sS", "--max-time", "5", "http://127.0.0.1:6000/"],
                         capture_output=True, text=True)
    assert refused.returncode in (7, 56), refused.stderr  # refused / reset, not 28 (timed out)
    assert appjail(helper, MEMBER, "stop", "held").returncode == 0
    after = host_http_server(lab, 6000)
    try:
        assert after.stdout.readline().startswith("Serving HTTP on"), after.stderr.read()
    finally:
        after.kill()
        after.communicate()


def test_an_adopted_jail_holds_its_published_ports_again_or_names_the_one_taken(helper, lab):
    keep_jail(helper, "adopted", "--publish", "6000:8080", "--publish", "6001:8081")
    helper.kill(signal.SIGKILL)  # its sockets go with it
    taken = host_listener(lab, 6001)
    try:
        helper.start()
        jail = inspect_json(helper, "adopted")
        assert jail["ports_not_held"] == ["6001:8081/tcp"], jail
        assert_held(lab, 6000)
        assert "PORTS NOT HELD: 6001:8081/tcp" in appjail(helper, MEMBER, "ls").stdout
        assert "PORTS NOT HELD: 6001:8081/tcp" in appjail(helper, MEMBER, "inspect", "adopted").stdout
    finally:
        taken.kill()
        taken.wait()
    assert "cannot hold its published port 6001:8081/tcp again" in helper.log_path.read_text()
    assert appjail(helper, MEMBER, "stop", "adopted").returncode == 0


@pytest.fixture
def other_server(lab):
    """A second destination on the uplink, outside 192.0.2.0/24."""
    server = lab.popen_in(lab.uplink_ns, [sys.executable, "-m", "http.server", "--bind", lab.UPLINK_ADDR,
                                          "8081", "--directory", "/nonexistent-dir-listing"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{lab.UPLINK_ADDR}:8081/"
    assert wait_until(lambda: lab.run_in(lab.uplink_ns, ["curl", "-s", "-o", "/dev/null", url]).returncode == 0, 10)
    yield url
    server.kill()
    server.wait()


def test_denied_range_is_dropped_and_counted_while_others_work(helper, lab, other_server):
    keep_jail(helper, "deny", "--deny", "192.0.2.0/24")
    blocked = appjail(helper, MEMBER, "run", "--name", "deny", "--", "curl", "-sS", "--max-time", "2",
                      f"http://{lab.SERVER_ADDR}/")
    assert blocked.returncode != 0
    assert inspect_json(helper, "deny")["counters"]["dropped_packets"] > 0
    other = appjail(helper, MEMBER, "run", "--name", "deny", "--", "curl", "-sS", "-o", "/dev/null",
                    "-w", "%{http_code}", other_server)
    assert other.returncode == 0 and other.stdout in ("200", "404"), other.stderr


def test_no_lan_with_vpn_still_reaches_the_server_through_the_tunnel(helper, lab):
    result = appjail(helper, MEMBER, "run", "--no-lan", "--vpn", lab.wg_ifname, "--dns", DNS, "--",
                     "curl", "-sS", f"http://www.{lab.ZONE}/")
    assert result.stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n", result.stderr


def test_signals_tell_of_jails_and_of_a_vpn_going_away(helper, lab):
    listener = signal_listener(helper, MEMBER)
    keep_jail(helper, "sig", "--vpn", lab.wg_ifname)
    lab.wg_delete()
    lab.wg_create()
    assert appjail(helper, MEMBER, "stop", "sig").returncode == 0
    assert signals_seen(listener, 4) == ["JailAdded sig", "VpnChanged sig False", "VpnChanged sig True",
                                         "JailRemoved sig"]


def test_inspect_watch_redraws_until_interrupted(helper):
    keep_jail(helper, "watched")
    watch = subprocess.Popen(appjail_argv("inspect", "--watch", "watched"), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, text=True, **user_popen_kwargs(MEMBER, helper.bus_address))
    time.sleep(3.5)
    watch.send_signal(signal.SIGINT)
    out, _ = watch.communicate(timeout=10)
    assert watch.returncode == 0
    pages = out.split("\x1b[H\x1b[2J")[1:]
    assert len(pages) >= 2 and all("PACKETS" in page and "jail watched" in page for page in pages)
    human = appjail(helper, MEMBER, "ls")
    assert human.stdout.splitlines()[0].split() == ["NAME", "OWNER", "ADDRESS", "VPN", "PROCESSES",
                                                    "KEEP", "OUT", "IN", "DROPPED"]


def _admin_counters(name: str) -> dict[str, int]:
    """A jail's counters as an admin reads them with the backend's own tool, summed by role, and the
    drops of the jail's own namespace with nft there."""
    backend = os.environ.get("APPJAIL_FIREWALL", "nftables")
    totals = {"in": [0, 0], "out": [0, 0], "dropped": [0, 0]}
    if backend == "nftables":
        listing = json.loads(subprocess.run(["nft", "-j", "list", "chain", "inet", "appjail", f"aj-{name}"],
                                            capture_output=True, text=True, check=True).stdout)
        for item in listing["nftables"]:
            rule = item.get("rule")
            if rule:
                if rule["comment"] not in totals:  # a record rule notes destinations, counts nothing
                    continue
                counter = next(s["counter"] for s in rule["expr"] if "counter" in s)
                totals[rule["comment"]][0] += counter["packets"]
                totals[rule["comment"]][1] += counter["bytes"]
    else:  # -L -v -x: packets, bytes, ..., /* role */
        listing = subprocess.run(["iptables-legacy", "-w", "-L", f"aj-{name}", "-v", "-x", "-n"],
                                 capture_output=True, text=True, check=True).stdout
        for line in listing.splitlines()[2:]:
            words = line.split()
            role = words[words.index("/*") + 1]
            if role not in totals:
                continue
            totals[role][0] += int(words[0])
            totals[role][1] += int(words[1])
    inside = json.loads(subprocess.run(["ip", "netns", "exec", f"aj-{name}", "nft", "-j", "list", "chain", "inet",
                                        "appjail", "output"], capture_output=True, text=True, check=True).stdout)
    for item in inside["nftables"]:  # what the jail's own namespace dropped (jailpolicy)
        counter = next((s["counter"] for s in item.get("rule", {}).get("expr", []) if "counter" in s), None)
        if counter is not None:
            totals["dropped"][0] += counter["packets"]
            totals["dropped"][1] += counter["bytes"]
    return {f"{prefix}_{unit}": totals[role][i] for role, prefix in (("in", "rx"), ("out", "tx"),
                                                                     ("dropped", "dropped"))
            for i, unit in enumerate(("packets", "bytes"))}


def test_the_admin_reads_the_same_counters_as_inspect(helper, lab):
    keep_jail(helper, "adm", "--deny", "198.51.100.0/24")
    assert appjail(helper, MEMBER, "run", "--name", "adm", "--", "curl", "-sS", "-o", "/dev/null",
                   f"http://{lab.SERVER_ADDR}/bytes/{DOWNLOAD}").returncode == 0
    appjail(helper, MEMBER, "run", "--name", "adm", "--", "curl", "-sS", "--max-time", "1", "http://198.51.100.1/")
    counters = inspect_json(helper, "adm")["counters"]
    assert counters["rx_bytes"] >= DOWNLOAD and counters["dropped_packets"] > 0
    with in_netns(lab.host_ns):
        assert _admin_counters("adm") == counters


def blocked_entry(jail: dict, proto: str, dst: str, dport: int) -> dict | None:
    return next((b for b in jail["blocked"] if (b["proto"], b["dst"], b["dport"]) == (proto, dst, dport)), None)


def test_blocked_destination_of_a_denied_range_is_listed_with_its_reason(helper, lab):
    keep_jail(helper, "bdeny", "--deny", "192.0.2.0/24")
    assert inspect_json(helper, "bdeny")["blocked"] == []
    started = int(time.time())
    for _ in range(2):
        assert appjail(helper, MEMBER, "run", "--name", "bdeny", "--", "curl", "-sS", "--max-time", "1",
                       f"http://{lab.SERVER_ADDR}/").returncode != 0
    jail = inspect_json(helper, "bdeny")
    entry = blocked_entry(jail, "tcp", lab.SERVER_ADDR, 80)
    assert entry is not None, jail["blocked"]
    assert entry["reason"] == "deny" and entry["packets"] >= 2 and entry["bytes"] >= 2 * 60
    assert started - 1 <= entry["first"] <= entry["last"] <= time.time() + 1
    assert set(entry) == {"proto", "dst", "dport", "reason", "packets", "bytes", "first", "last"}
    human = appjail(helper, MEMBER, "inspect", "bdeny").stdout
    assert "blocked (1)" in human, human
    assert any(line.split()[:3] == ["tcp", f"{lab.SERVER_ADDR}:80", "deny"] for line in human.splitlines()), human


def test_blocked_by_the_kill_switch_is_listed_as_such(helper, lab):
    keep_jail(helper, "bks", "--vpn", lab.wg_ifname)
    lab.wg_down()
    try:
        assert appjail(helper, MEMBER, "run", "--name", "bks", "--", "curl", "-sS", "--max-time", "1",
                       f"http://{lab.SERVER_ADDR}/").returncode != 0
        entry = blocked_entry(inspect_json(helper, "bks"), "tcp", lab.SERVER_ADDR, 80)
        assert entry is not None and entry["reason"] == "kill switch" and entry["packets"] >= 1, entry
    finally:
        lab.wg_up()


# 10,000 destinations in a documentation range the jail denies: 40 addresses x 250 ports
FLOOD = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for n in range(10_000):
    try:
        s.sendto(b"x", (f"203.0.113.{100 + n // 250}", 1000 + n % 250))
    except PermissionError:  # refused in the jail's own namespace: at once
        pass
"""
MEMORY_BOUND_KIB = 4096  # the helper's memory for one jail's 1000 blocked destinations (design.md)


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_blocked_ten_thousand_destinations_stay_bounded_and_inspect_stays_fast(helper, lab, in_host):
    from appjail.client import Client
    from appjail.helper.firewall.blocked import BLOCKED_MAX, SHOWN

    keep_jail(helper, "flood", "--deny", "203.0.113.0/24")
    client = Client(helper.bus_address)  # from this test's process: on the helper's host (in_host)

    def timed_inspect() -> float:
        """The helper's Inspect, as a client waits for it (median of 5)."""
        times = []
        for _ in range(5):
            started = time.monotonic()
            client.inspect(f"{MEMBER}/flood")  # the test runs as root: a member's jail is MEMBER/NAME
            times.append(time.monotonic() - started)
        return sorted(times)[2]

    empty = timed_inspect()
    before = _rss_kib(helper.proc.pid)
    sent = appjail(helper, MEMBER, "run", "--name", "flood", "--", "python3", "-c", FLOOD)
    assert sent.returncode == 0, sent.stderr
    assert wait_until(lambda: len(inspect_json(helper, "flood")["blocked"]) > 0, 5)
    full = timed_inspect()
    for _ in range(20):
        client.inspect(f"{MEMBER}/flood")
    grown = _rss_kib(helper.proc.pid) - before
    jail = inspect_json(helper, "flood")
    assert jail["counters"]["dropped_packets"] >= 10_000
    assert 0 < len(jail["blocked"]) <= SHOWN and all(b["reason"] == "deny" for b in jail["blocked"])
    with in_netns(lab.host_ns):
        held = _kernel_entries("flood")
    print(f"\n10,000 blocked destinations: {held} entries in the kernel (bound {BLOCKED_MAX}), helper "
          f"memory {grown:+d} KiB after 25 inspects; Inspect {empty * 1000:.1f} ms before, {full * 1000:.1f} ms after")
    assert held is None or held <= BLOCKED_MAX
    assert grown <= MEMORY_BOUND_KIB
    assert full < 0.050


def _kernel_entries(name: str) -> int | None:
    """How many elements the jail's nftables set holds (None on x_tables: the helper holds them)."""
    if os.environ.get("APPJAIL_FIREWALL", "nftables") != "nftables":
        return None
    listing = json.loads(subprocess.run(["nft", "-j", "list", "set", "inet", "appjail", f"aj-{name}"],
                                        capture_output=True, text=True, check=True).stdout)
    return sum(len(item["set"].get("elem", [])) for item in listing["nftables"] if "set" in item)


@contextmanager
def loopback_routed_to_host(lab):
    """The uplink sends what it addresses to 127.0.0.1 to the lab host, as a hostile neighbour would
    (and takes answers from 127.0.0.1)."""
    localnet = f"net.ipv4.conf.{lab.uplink_host_if}.route_localnet"
    lab.run_in(lab.uplink_ns, ["sysctl", "-qw", f"{localnet}=1"], check=True)
    commands = ["rule add pref 100 lookup local", "rule del pref 0 lookup local",
                "rule add pref 10 to 127.0.0.1 lookup 4242",
                f"route add 127.0.0.1/32 via {lab.HOST_UPLINK_ADDR} dev {lab.uplink_host_if} table 4242"]
    undo = ["route del 127.0.0.1/32 table 4242", "rule del pref 10", "rule add pref 0 lookup local",
            "rule del pref 100"]
    for command in commands:
        lab.run_in(lab.uplink_ns, ["ip", *command.split()], check=True)
    try:
        yield
    finally:
        for command in undo:
            lab.run_in(lab.uplink_ns, ["ip", *command.split()], check=True)
        lab.run_in(lab.uplink_ns, ["sysctl", "-qw", f"{localnet}=0"], check=True)


@pytest.mark.parametrize("vpn", [False, True], ids=["nat", "vpn"])
def test_a_port_published_on_loopback_reaches_the_host_alone(helper, lab, vpn):
    options = ("--vpn", lab.wg_ifname) if vpn else ()
    server = serve(helper, "webui", "127.0.0.1:6003", "ui\n", options=options)
    try:
        assert wait_until(lambda: fetch_from(lab, lab.host_ns, "http://127.0.0.1:6003/") == "ui\n", 15)
        for address in (lab.HOST_UPLINK_ADDR, lab.WG_CLIENT_TUNNEL_ADDR):
            assert fetch_from(lab, lab.uplink_ns, f"http://{address}:6003/").startswith("error")
        assert fetch_from(lab, lab.host_ns, f"http://{lab.HOST_UPLINK_ADDR}:6003/").startswith("error")
        with loopback_routed_to_host(lab):
            assert fetch_from(lab, lab.uplink_ns, "http://127.0.0.1:6003/").startswith("error")
        assert fetch_from(lab, lab.host_ns, "http://127.0.0.1:6003/") == "ui\n"
        assert inspect_json(helper, "webui")["publish"] == ["127.0.0.1:6003:8080/tcp"]
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert wait_until(lambda: list_namespaces("aj-") == [], 10)
