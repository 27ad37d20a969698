"""Tunnel jails for real: a WireGuard interface made in the lab's host, moved into the jail.

The lab's WireGuard server (wireguard-go, in the uplink) gets a peer per
jail; the engine runs in the lab's host, whose uplink up0 is captured to
show that nothing but WireGuard's UDP leaves while a tunnel jail works.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appjail.helper.engine.engine import Engine, JailError
from appjail.helper.kernel.netns import list_namespaces
from appjail.helper.tunnels import lookups, tundaemon
from appjail.lab import Lab
from appjail.model import JailSpec, ValidationError
from appjail.report import inspection
from appjail.wgconf import parse

from .conftest import engine_json, jail_run, residue_in_host, residue_machine_wide, secret_anywhere, serving
from .helperlab import MEMBER, OTHER_MEMBER, appjail, appjail_argv, jails, ls_seconds, user_popen_kwargs


@pytest.fixture(scope="module", autouse=True)
def server_forgets_these_tests_peers(lab: Lab):
    yield
    lab.wg_peers_forget()


def curl(name: str, url: str, timeout: float = 3) -> subprocess.CompletedProcess:
    return jail_run(name, "curl", "-sS", "--max-time", str(timeout), url, timeout=timeout + 5)


def only_wireguard(lines: list[str], lab: Lab) -> list[str]:
    """The captured packets that are not WireGuard between the host and the lab's server."""
    ours = f"{lab.HOST_UPLINK_ADDR}."
    server = f"{lab.UPLINK_ADDR}.{lab.WG_PORT}"
    return [line for line in lines if not (" UDP" in line or "UDP," in line) or server not in line
            or ours not in line]


def test_a_wireguard_jail_goes_out_only_through_its_own_tunnel(engine: Engine, in_host: Lab):
    lab = in_host
    text = lab.wg_peer("203.0.113.10")
    capture = lab.capture(lab.host_uplink_if, lab.host_ns, "not arp and not ip6 multicast")
    jail = engine.create(JailSpec("wga"), 0, wireguard=parse(text))
    try:
        assert curl("wga", f"http://{lab.SERVER_ADDR}/").stdout.strip() == "client=203.0.113.10"
        assert lab.http_log()[-1]["client"] == "203.0.113.10", "the server sees the peer's tunnel address"
        asked = jail_run("wga", "getent", "hosts", "tunnel-probe.lab.test")
        assert asked.returncode == 0 and lab.SERVER_ADDR in asked.stdout
        assert {q["client"] for q in lab.dns_log() if q["name"] == "tunnel-probe.lab.test."} == {"203.0.113.10"}
        links = jail_run("wga", "ip", "-o", "link").stdout.splitlines()
        assert [line.split(":")[1].strip() for line in links] == ["lo", "aj-wga"]
        assert jail_run("wga", "ip", "-6", "addr").stdout.strip() == "", "no IPv6 without an IPv6 Address"
        # wireguard-go and its UDP socket stay in the host; the jail holds none
        assert serving("wireguard-go", "aj-wga"), "wireguard-go runs in the host namespace"
        assert "udp" not in jail_run("wga", "ss", "-uanp").stdout.split("\n", 1)[-1].lower()
        status = engine.tunnel_status(jail)
        assert status["up"] and status["endpoint"] == f"{lab.UPLINK_ADDR}:{lab.WG_PORT}"
        assert status["rx_bytes"] > 0 and engine.tunnel_counters(jail)["tx_bytes"] > 0
    finally:
        packets = capture.stop()
    assert packets and only_wireguard(packets, lab) == [], "only WireGuard UDP on the uplink"


def test_two_jails_with_two_peers_and_a_second_program_in_one(engine: Engine, in_host: Lab):
    lab = in_host
    engine.create(JailSpec("wgb"), 0, wireguard=parse(lab.wg_peer("203.0.113.11")))
    engine.create(JailSpec("wgc"), 0, wireguard=parse(lab.wg_peer("203.0.113.12")))
    assert curl("wgb", f"http://{lab.SERVER_ADDR}/").stdout.strip() == "client=203.0.113.11"
    assert curl("wgc", f"http://{lab.SERVER_ADDR}/").stdout.strip() == "client=203.0.113.12"
    # a second program in jail wgb while the first one still runs
    first = subprocess.Popen(["ip", "netns", "exec", "aj-wgb", "sleep", "3"])
    try:
        assert curl("wgb", f"http://{lab.SERVER_ADDR}/").stdout.strip() == "client=203.0.113.11"
    finally:
        first.kill()
        first.wait()


def test_the_server_going_away_closes_the_jail_and_its_return_opens_it(engine: Engine, in_host: Lab):
    lab = in_host
    engine.create(JailSpec("wgd"), 0, wireguard=parse(lab.wg_peer("203.0.113.13")))
    assert curl("wgd", f"http://{lab.SERVER_ADDR}/").returncode == 0
    capture = lab.capture(lab.host_uplink_if, lab.host_ns, "not arp and not ip6 multicast")
    lab.wg_server_down()
    try:
        gone = curl("wgd", f"http://{lab.SERVER_ADDR}/", timeout=2)
        assert gone.returncode != 0, "nothing through a tunnel whose server is gone"
        assert jail_run("wgd", "ping", "-c", "1", "-W", "1", lab.UPLINK_ADDR).returncode != 0
    finally:
        lab.wg_server_up()
        packets = capture.stop()
    assert only_wireguard([p for p in packets if "ICMP" not in p or "udp port" not in p], lab) == []
    deadline = time.monotonic() + 15
    while curl("wgd", f"http://{lab.SERVER_ADDR}/", timeout=2).returncode != 0:
        assert time.monotonic() < deadline, "traffic did not resume"


def test_a_tunnel_is_idle_until_used_and_down_while_its_peer_does_not_answer(engine: Engine, in_host: Lab):
    lab = in_host
    text = lab.wg_peer("203.0.113.14")
    stranger = base64.b64encode(os.urandom(32)).decode()  # a peer the server is not: it answers nothing
    unanswered = re.sub(r"(?m)^PublicKey = .*$", f"PublicKey = {stranger}", text)
    jail = engine.create(JailSpec("wgi"), 0, wireguard=parse(unanswered))
    assert engine.tunnel_status(jail)["state"] == "idle", "no handshake yet, nothing sent: not an alarm"
    assert curl("wgi", f"http://{lab.SERVER_ADDR}/", timeout=2).returncode != 0
    status = engine.tunnel_status(jail)
    assert (status["state"], status["up"]) == ("down", False), status
    assert "does not answer its handshakes" in inspection(engine_json(engine, jail))
    answered = engine.create(JailSpec("wgj"), 0, wireguard=parse(text))
    assert engine.tunnel_status(answered)["state"] == "idle"
    assert curl("wgj", f"http://{lab.SERVER_ADDR}/").returncode == 0
    assert engine.tunnel_status(answered)["state"] == "up"


def test_keys_stay_out_of_argv_and_files_and_teardown_leaves_nothing(engine: Engine, in_host: Lab):
    lab = in_host
    text = lab.wg_peer("203.0.113.14")
    key = parse(text).private_key
    jail = engine.create(JailSpec("wge"), 0, wireguard=parse(text))
    assert curl("wge", f"http://{lab.SERVER_ADDR}/").returncode == 0
    assert secret_anywhere(key) == [], "the key is nowhere while the jail runs"
    engine.destroy(jail.name)
    assert serving("wireguard-go", "aj-wge") == [] and not Path("/var/run/wireguard/aj-wge.sock").exists()
    assert secret_anywhere(key) == []
    assert residue_in_host() == [] and residue_machine_wide() == []


@pytest.fixture
def host_resolver(lab: Lab):
    """The resolver the helper (and the engine in HOST) asks: the lab's zone, NXDOMAIN for every other name."""
    resolver = lab.start_host_resolver(lab.UPLINK_ADDR, delay=0)
    yield resolver
    resolver.stop()


def test_an_unresolvable_endpoint_or_bad_file_creates_nothing(engine: Engine, in_host: Lab, host_resolver):
    text = in_host.wg_peer("203.0.113.15").replace(f"{in_host.UPLINK_ADDR}:", "no-such-host.invalid:")
    with pytest.raises(ValidationError, match=r"^WireGuard file, line 8: Endpoint no-such-host.invalid does not resolve$"):
        engine.create(JailSpec("wgf"), 0, wireguard=parse(text))
    assert engine.list() == [] and serving("wireguard-go", "aj-wgf") == []
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_reconcile_removes_a_crashed_helpers_tunnel_and_adopts_a_finished_one(in_host: Lab, tmp_path):
    lab = in_host
    crashed = Engine(run_dir=tmp_path / "run")
    crashed.create(JailSpec("wgk"), 0, wireguard=parse(lab.wg_peer("203.0.113.16")))
    crashed.create(JailSpec("wgl"), 0, wireguard=parse(lab.wg_peer("203.0.113.17")))
    crashed.store.delete("aj-wgl")  # as if it died before its record was written
    restarted = Engine(run_dir=tmp_path / "run")
    report = restarted.reconcile()
    try:
        assert report.adopted == ["wgk"] and "wireguard aj-wgl" in report.removed
        assert serving("wireguard-go", "aj-wgl") == [] and not Path("/var/run/wireguard/aj-wgl.sock").exists()
        assert curl("wgk", f"http://{lab.SERVER_ADDR}/").stdout.strip() == "client=203.0.113.16"
    finally:
        restarted.destroy("wgk")
    assert serving("wireguard-go", "aj-wgk") == []
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_a_failed_creation_removes_its_daemon(engine: Engine, in_host: Lab):
    text = in_host.wg_peer("203.0.113.18")
    config = parse(text)
    config = config._replace(addresses=config.addresses * 2)  # refused inside the jail, after the move
    with pytest.raises(JailError, match="could not create jail 'wgm'"):
        engine.create(JailSpec("wgm"), 0, wireguard=config)
    assert serving("wireguard-go", "aj-wgm") == [] and os.path.exists("/run/netns/aj-wgm") is False


# -- through the helper: a test user's `appjail run --wireguard FILE` over the bus ----------------

def users_file(text: str, name: str = "wg.conf", user: str = MEMBER) -> str:
    """TEXT as a file of USER's own in their home, as a provider's file would be (mode 600)."""
    entry = pwd.getpwnam(user)
    path = Path(entry.pw_dir) / name
    path.write_text(text)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o600)
    return str(path)


def user_curl(helper, lab: Lab, *options: str) -> subprocess.CompletedProcess:
    return appjail(helper, MEMBER, "run", *options, "--", "curl", "-sS", "--max-time", "5",
                   f"http://{lab.SERVER_ADDR}/")


def test_a_user_runs_keeps_lists_inspects_joins_and_stops_wireguard_jails(helper, lab):
    first = users_file(lab.wg_peer("203.0.113.20"), "first.conf")
    second = users_file(lab.wg_peer("203.0.113.21"), "second.conf")
    started = user_curl(helper, lab, "--keep", "--name", "wgu", "--wireguard", first)
    assert started.returncode == 0 and started.stdout.strip() == "client=203.0.113.20", started.stderr
    assert lab.http_log()[-1]["client"] == "203.0.113.20", "the server sees the peer's tunnel address"
    other = user_curl(helper, lab, "--keep", "--name", "wgv", "--wireguard", second)
    assert other.stdout.strip() == "client=203.0.113.21", other.stderr
    # a third program joins wgu by its name alone, and goes out through wgu's tunnel
    joined = user_curl(helper, lab, "--name", "wgu")
    assert joined.stdout.strip() == "client=203.0.113.20", joined.stderr

    endpoint = f"{lab.UPLINK_ADDR}:{lab.WG_PORT}"
    listed = {j["name"]: j for j in jails(helper)}
    assert sorted(listed) == ["wgu", "wgv"]
    tunnel = listed["wgu"]["tunnel"]
    assert (tunnel["type"], tunnel["endpoint"], tunnel["up"]) == ("wireguard", endpoint, True)
    assert time.time() - tunnel["latest_handshake"] < 60 and tunnel["rx_bytes"] > 0 and tunnel["tx_bytes"] > 0
    assert listed["wgu"]["vpn_up"] is True and listed["wgu"]["address"] == "203.0.113.20"
    inspected = json.loads(appjail(helper, MEMBER, "inspect", "--json", "wgu").stdout)
    assert inspected["tunnel"]["endpoint"] == endpoint and inspected["counters"]["rx_bytes"] > 0

    table = appjail(helper, MEMBER, "ls").stdout.splitlines()
    assert [row.split()[:4] for row in table[1:3]] == [["wgu", MEMBER, "203.0.113.20", "wireguard"],
                                                      ["wgv", MEMBER, "203.0.113.21", "wireguard"]]
    assert table[4].startswith(f"wgu: tunnel wireguard to {endpoint}, up, handshake "), table
    page = appjail(helper, MEMBER, "inspect", "wgu").stdout
    assert f"tunnel    wireguard to {endpoint}, up, handshake " in page and "TUNNEL DOWN" not in page, page

    for name in ("wgu", "wgv"):
        assert appjail(helper, MEMBER, "stop", name).returncode == 0
    assert jails(helper) == [] and list_namespaces("aj-") == []
    assert serving("wireguard-go", "aj-wgu") == serving("wireguard-go", "aj-wgv") == []


def _line(text: str, number: int, replacement: str) -> str:
    lines = text.split("\n")
    lines[number - 1] = replacement
    return "\n".join(lines)


BAD_FILES = {  # lab.wg_peer's file, changed -> the sentence appjail says
    "unknown key": (lambda text: _line(text, 7, "PostUp = curl evil.example"),
                    "WireGuard file, line 7: unknown key 'PostUp' in [Peer]"),
    "short key": (lambda text: _line(text, 2, "PrivateKey = AAAA"),
                  "WireGuard file, line 2: PrivateKey has 3 bytes, a WireGuard key has 32"),
    "unresolvable endpoint": (lambda text: text.replace("198.51.100.1:", "no-such-host.invalid:"),
                              "WireGuard file, line 8: Endpoint no-such-host.invalid does not resolve"),
}


@pytest.mark.parametrize("mistake", list(BAD_FILES))
def test_a_bad_wireguard_file_is_one_sentence_and_creates_nothing(helper, lab, host_resolver, mistake):
    change, sentence = BAD_FILES[mistake]
    good = lab.wg_peer("203.0.113.22")
    path = users_file(change(good))
    refused = user_curl(helper, lab, "--name", "wgbad", "--wireguard", path)
    assert refused.returncode == 125 and refused.stderr == f"appjail: {sentence}\n", refused.stderr
    assert jails(helper) == [] and list_namespaces("aj-") == [] and serving("wireguard-go", "aj-wgbad") == []
    assert good.split("PrivateKey = ")[1].split("\n")[0] not in helper.log_path.read_text()


# -- nothing slow on the helper's main loop ----------------------------------------------------------

def user_popen(helper, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(appjail_argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **user_popen_kwargs(MEMBER, helper.bus_address))


def test_a_slow_endpoint_name_delays_no_one_and_one_never_answered_fails_in_one_sentence(helper, lab):
    """The helper's resolver answers 2.5 s late, then not at all (within the helper's 5 s)."""
    path = users_file(lab.wg_peer("203.0.113.23").replace(f"{lab.UPLINK_ADDR}:", f"vpn.{lab.ZONE}:"), "slow.conf")
    for delay, late in ((2.5, False), (3600, True)):
        resolver = lab.start_host_resolver(lab.UPLINK_ADDR, delay)
        try:
            started = time.monotonic()
            run = user_popen(helper, "run", "--name", "wgslow", "--wireguard", path, "--", "curl", "-sS",
                             "--max-time", "5", f"http://{lab.SERVER_ADDR}/")
            try:
                time.sleep(0.5)  # the helper waits for the name now
                assert ls_seconds(helper, OTHER_MEMBER) < 1.0, "another user's ls is answered meanwhile"
                output, errors = run.communicate(timeout=30)
            finally:
                run.kill()
            took = time.monotonic() - started
        finally:
            resolver.stop()
        assert resolver.log(), "the helper asked the slow server"
        if late:
            assert lookups.TIMEOUT <= took < lookups.TIMEOUT + 5, took
            assert (run.returncode, errors) == (125, "appjail: could not create jail 'wgslow': WireGuard Endpoint "
                                                     f"vpn.{lab.ZONE} did not resolve within 5 s\n")
        else:
            assert took >= delay and run.returncode == 0, errors
            assert output.strip() == "client=203.0.113.23"
        assert jails(helper) == [] and list_namespaces("aj-") == [] and serving("wireguard-go", "aj-wgslow") == []


def test_a_stop_waiting_for_a_stuck_tunnel_daemon_delays_no_one(helper, lab):
    path = users_file(lab.wg_peer("203.0.113.24"), "stuck.conf")
    made = appjail(helper, MEMBER, "run", "--keep", "--name", "wgstuck", "--wireguard", path, "--", "true")
    assert made.returncode == 0, made.stderr
    (daemon,) = serving("wireguard-go", "aj-wgstuck")
    os.kill(daemon, signal.SIGSTOP)  # SIGTERM waits, unheeded: the helper kills it after tundaemon.STOP_TIMEOUT
    started = time.monotonic()
    stop = user_popen(helper, "stop", "wgstuck")
    try:
        time.sleep(0.3)  # the helper waits for wireguard-go now
        assert ls_seconds(helper, OTHER_MEMBER) < 1.0, "another user's ls is answered meanwhile"
        _, errors = stop.communicate(timeout=30)
    finally:
        stop.kill()
    assert stop.returncode == 0 and errors == "" and time.monotonic() - started >= tundaemon.STOP_TIMEOUT
    assert jails(helper) == [] and list_namespaces("aj-") == [] and serving("wireguard-go", "aj-wgstuck") == []
