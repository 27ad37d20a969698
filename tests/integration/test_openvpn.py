"""OpenVPN jails for real: openvpn in the lab's host, its tun device moved into the jail.

The lab's OpenVPN server (uplink, UDP 1194) has keys made at test time; the
engine runs in the lab's host, whose uplink up0 is captured to show that
nothing but OpenVPN's UDP to the server leaves while an OpenVPN jail works.
The last tests go through the real helper, as the lab's users.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appjail import model, tunnelfiles
from appjail.helper.engine.engine import Engine, JailError
from appjail.helper.engine.jail import Jail
from appjail.helper.kernel.netns import list_namespaces
from appjail.helper.tunnels import openvpn, tundaemon
from appjail.lab import Lab, in_netns
from appjail.lab import openvpn as lab_openvpn
from appjail.model import JailSpec, ValidationError
from appjail.ovpnconf import parse
from appjail.report import inspection

from .conftest import engine_json, jail_run, residue_in_host, residue_machine_wide, secret_anywhere, serving
from .helperlab import MEMBER, OTHER_MEMBER, appjail, appjail_argv, jails, ls_seconds, user_popen_kwargs, wait_until

TUNNEL_NET = ipaddress.ip_network("203.0.113.128/26")


@pytest.fixture(scope="module", autouse=True)
def server_stops_after_these_tests(lab: Lab):
    """The server pings clients it still believes in for a while: it goes, so later captures see none."""
    yield
    lab.ovpn_server_down()


def connected(engine: Engine, jail: Jail) -> Jail:
    """What the helper's main loop does for a new OpenVPN jail: wait for its tunnel (JailError if it fails)."""
    deadline = time.monotonic() + engine.connect_timeout
    while not engine.connected(jail, overdue=time.monotonic() > deadline):
        time.sleep(0.05)
    return jail


def curl(name: str, url: str, timeout: float = 3) -> subprocess.CompletedProcess:
    return jail_run(name, "curl", "-sS", "--max-time", str(timeout), url, timeout=timeout + 5)


def only_openvpn(lines: list[str], lab: Lab) -> list[str]:
    """The captured packets that are not OpenVPN's UDP between the host and the lab's server
    (nor the server's ICMP port unreachable while it is gone, nor the lab host's own WireGuard, which
    other tests' --vpn jails use)."""
    server = f"{lab.UPLINK_ADDR}.1194"
    return [line for line in lines
            if not ((" UDP" in line or "UDP," in line) and server in line and f"{lab.HOST_UPLINK_ADDR}." in line)
            and not ("ICMP" in line and "udp port 1194 unreachable" in line)
            and f"{lab.UPLINK_ADDR}.{lab.WG_PORT}" not in line]  # the lab host's own wg0, not a jail's


def tunnel_address(name: str) -> str:
    words = jail_run(name, "ip", "-4", "-o", "addr", "show", "dev", f"aj-{name}").stdout.split()
    return words[words.index("inet") + 1].split("/")[0]


def wait_for(what: str, check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_an_openvpn_jail_goes_out_only_through_its_own_tunnel(engine: Engine, in_host: Lab, caplog):
    lab = in_host
    text = lab.ovpn_client()
    capture = lab.capture(lab.host_uplink_if, lab.host_ns, "not arp and not ip6 multicast")
    caplog.set_level(logging.INFO)
    jail = connected(engine, engine.create(JailSpec("ova"), 0, openvpn=parse(text)))
    try:
        address = tunnel_address("ova")
        assert ipaddress.ip_address(address) in TUNNEL_NET
        assert curl("ova", f"http://{lab.SERVER_ADDR}/").stdout.strip() == f"client={address}"
        asked = jail_run("ova", "getent", "hosts", "ovpn-probe.lab.test")
        assert asked.returncode == 0 and lab.SERVER_ADDR in asked.stdout
        assert {q["client"] for q in lab.dns_log() if q["name"] == "ovpn-probe.lab.test."} == {address}, \
            "the lookup went to the pushed DNS server, through the tunnel"
        assert jail.dns == (lab.DNS_ADDR,)
        links = jail_run("ova", "ip", "-o", "link").stdout.splitlines()
        assert [line.split(":")[1].strip() for line in links] == ["lo", "aj-ova"]
        # openvpn and its socket stay in the host; the jail holds none
        (daemon,) = serving("openvpn", "aj-ova")
        assert os.stat(f"/proc/{daemon}/ns/net") == os.stat("/proc/thread-self/ns/net"), "it runs in the host"
        assert jail_run("ova", "ss", "-uanH").stdout.strip() == "", "no UDP socket in the jail"
        status = engine.tunnel_status(jail)
        assert status["up"] and status["type"] == "openvpn" and status["connected_to"].startswith(lab.UPLINK_ADDR)
        assert status["addresses"] == [f"{address}/26"] and engine.tunnel_counters(jail)["tx_bytes"] > 0
    finally:
        packets = capture.stop()
    assert packets and only_openvpn(packets, lab) == [], "only OpenVPN's UDP on the uplink"
    logged = [r.getMessage() for r in caplog.records if r.name == "appjail.helper.tunnels.openvpn"]
    assert any("aj-ova: Initialization Sequence Completed" in line for line in logged), "its log is the helper's"


def test_the_server_going_away_closes_the_jail_and_its_return_opens_it(engine: Engine, in_host: Lab):
    lab = in_host
    jail = connected(engine, engine.create(JailSpec("ovb"), 0, openvpn=parse(lab.ovpn_client())))
    assert curl("ovb", f"http://{lab.SERVER_ADDR}/").returncode == 0
    capture = lab.capture(lab.host_uplink_if, lab.host_ns, "not arp and not ip6 multicast")
    lab.ovpn_server_down()
    try:
        assert curl("ovb", f"http://{lab.SERVER_ADDR}/", timeout=2).returncode != 0
        # openvpn gives the session up (ping-restart): its --down hook has the helper take the device out: the jail keeps only lo
        wait_for("the tunnel was not reported down", lambda: not engine.tunnel_status(jail)["up"])
        assert [line.split(":")[1].strip() for line in jail_run("ovb", "ip", "-o", "link").stdout.splitlines()] \
            == ["lo"]
        assert jail_run("ovb", "ping", "-c", "1", "-W", "1", lab.UPLINK_ADDR).returncode != 0
        page = inspection(engine_json(engine, jail))
        assert "TUNNEL DOWN" in page, page
    finally:
        lab.ovpn_start()
        packets = capture.stop()
    assert only_openvpn(packets, lab) == [], "nothing left outside OpenVPN while the server was gone"
    wait_for("traffic did not resume", lambda: curl("ovb", f"http://{lab.SERVER_ADDR}/", timeout=2).returncode == 0)
    assert engine.tunnel_status(jail)["up"]


def test_keys_stay_out_of_argv_files_and_log_and_teardown_leaves_nothing(engine: Engine, in_host: Lab, caplog):
    lab = in_host
    caplog.set_level(logging.DEBUG)
    jail = connected(engine, engine.create(JailSpec("ovc"), 0, openvpn=parse(lab.ovpn_client())))
    assert curl("ovc", f"http://{lab.SERVER_ADDR}/").returncode == 0
    for secret in (lab.ovpn_client_key(), lab_openvpn.PASSWORD):
        assert secret_anywhere(secret, caplog.text) == [], f"{secret[:4]}... is nowhere while the jail runs"
    engine.destroy(jail.name)
    assert serving("openvpn", "aj-ovc") == [] and not Path("/run/appjail/openvpn/aj-ovc.sock").exists()
    assert secret_anywhere(lab.ovpn_client_key(), caplog.text) == []
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_the_cli_puts_the_auth_user_pass_file_inline(engine: Engine, in_host: Lab, tmp_path):
    lab = in_host
    (tmp_path / "creds.txt").write_text(f"{lab_openvpn.USER}\n{lab_openvpn.PASSWORD}\n")
    (tmp_path / "creds.txt").chmod(0o600)
    config = tmp_path / "provider.ovpn"
    config.write_text(lab.ovpn_client(auth_file="creds.txt"))
    config.chmod(0o600)
    option = next(o for o in model.OPTIONS if o.key == "openvpn")
    sent = tunnelfiles.read_file_option(option, str(config))
    assert "auth-user-pass creds.txt" not in sent and f"<auth-user-pass>\n{lab_openvpn.USER}\n{lab_openvpn.PASSWORD}\n" in sent
    connected(engine, engine.create(JailSpec("ovd"), 0, openvpn=parse(sent)))
    assert curl("ovd", f"http://{lab.SERVER_ADDR}/").returncode == 0, "the server took the user and password"


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace("nobind\n", "nobind\nup /bin/sh\n"),
     r"^OpenVPN file, line 6: up runs a program on the host, which appjail does not allow: remove the line$"),
    (lambda t: t.replace("nobind\n", "nobind\nsocks-proxy 192.0.2.1\n"),
     r"^OpenVPN file, line 6: unknown directive 'socks-proxy'$"),
    (lambda t: t[:t.index("<ca>")] + t[t.index("</ca>") + 6:],
     r"^OpenVPN file, line \d+: the file ends without a <ca> block"),
])
def test_a_bad_file_creates_nothing(engine: Engine, in_host: Lab, change, message):
    with pytest.raises(ValidationError, match=message):
        engine.create(JailSpec("ove"), 0, openvpn=parse(change(in_host.ovpn_client())))
    assert engine.list() == [] and serving("openvpn", "aj-ove") == []
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_a_daemon_that_ends_before_its_tunnel_is_up_says_why(engine: Engine, in_host: Lab):
    text = in_host.ovpn_client().replace(lab_openvpn.PASSWORD, "wrong-password")
    jail = engine.create(JailSpec("ovf"), 0, openvpn=parse(text))
    assert jail.connecting, "created at once, its daemon started"
    with pytest.raises(JailError, match=r"^could not create jail 'ovf': openvpn ended before its tunnel was up: "
                                        r"the server refused the user name or password$"):
        connected(engine, jail)
    engine.destroy("ovf")
    assert serving("openvpn", "aj-ovf") == [] and not Path("/run/appjail/openvpn/aj-ovf.sock").exists()
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_reconcile_stops_a_daemon_whose_jail_has_no_record(in_host: Lab, tmp_path):
    lab = in_host
    crashed = Engine(run_dir=tmp_path / "run")
    connected(crashed, crashed.create(JailSpec("ovg"), 0, openvpn=parse(lab.ovpn_client())))
    crashed.store.delete("aj-ovg")
    restarted = Engine(run_dir=tmp_path / "run")
    report = restarted.reconcile()
    assert report.adopted == [] and "openvpn aj-ovg" in report.removed and "namespace aj-ovg" in report.removed
    assert serving("openvpn", "aj-ovg") == [] and list(openvpn.SOCKET_DIR.glob("aj-ovg.*")) == []
    assert residue_in_host() == [] and residue_machine_wide() == []


# -- through the real helper, as the lab's users -------------------------------

def member_file(name: str, text: str) -> Path:
    """A file of MEMBER's own in their home (appjail reads it as them), not writable by others."""
    path = Path(os.path.expanduser(f"~{MEMBER}")) / name
    path.write_text(text)
    path.chmod(0o600)
    shutil.chown(path, MEMBER, MEMBER)
    return path


def nothing_left(lab: Lab, ifname: str) -> list[str]:
    """What a removed OpenVPN jail could leave: its namespace, links, daemon, sockets, records."""
    with in_netns(lab.host_ns):
        found = residue_in_host() + [f"openvpn {pid}" for pid in serving("openvpn", ifname)]
    return found + residue_machine_wide() + [str(p) for p in openvpn.SOCKET_DIR.glob(f"{ifname}.*")] \
        + [str(p) for p in tundaemon.RECORDS.glob(f"*/{ifname}")]


def test_a_connecting_openvpn_jail_blocks_no_one_and_its_failure_leaves_nothing(helper, lab: Lab):
    unanswered = lab.ovpn_client().replace(f"remote {lab.UPLINK_ADDR} 1194", "remote 198.51.100.9 1194")
    config = member_file("unanswered.ovpn", unanswered)  # an address of the uplink's nobody has
    run = subprocess.Popen(appjail_argv("run", "--name", "waits", "--openvpn", str(config), "--", "true"),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           **user_popen_kwargs(MEMBER, helper.bus_address))
    try:
        assert wait_until(lambda: "aj-waits" in list_namespaces("aj-"), 10)
        time.sleep(0.5)  # openvpn tries its server now
        assert ls_seconds(helper, OTHER_MEMBER) < 1.0, "another user's ls is answered while it connects"
        (listed,) = jails(helper, MEMBER)
        assert listed["tunnel"]["state"] == "connecting" and not listed["tunnel"]["up"] and listed["pids"] == []
        assert "openvpn CONNECTING" in appjail(helper, MEMBER, "ls").stdout
        page = appjail(helper, MEMBER, "inspect", "waits").stdout
        assert "connecting" in page and "CONNECTING: openvpn has not connected yet" in page, page
        _, errors = run.communicate(timeout=openvpn.CONNECT_TIMEOUT + 20)
    finally:
        run.kill()
    assert run.returncode == 125 and errors.count("\n") == 1, errors
    assert errors.startswith("appjail: could not create jail 'waits': openvpn's tunnel was not up within 20 s: ")
    assert jails(helper, MEMBER) == [] and nothing_left(lab, "aj-waits") == []


def test_a_stop_while_connecting_fails_the_waiting_runs(helper, lab: Lab):
    unanswered = lab.ovpn_client().replace(f"remote {lab.UPLINK_ADDR} 1194", "remote 198.51.100.9 1194")
    config = member_file("unanswered.ovpn", unanswered)
    def start(*options: str) -> subprocess.Popen[str]:
        return subprocess.Popen(appjail_argv("run", "--name", "stopped", *options, "--", "true"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **user_popen_kwargs(MEMBER, helper.bus_address))

    runs = [start("--openvpn", str(config))]
    try:
        assert wait_until(lambda: "aj-stopped" in list_namespaces("aj-"), 10)
        runs.append(start())  # joins it by name, and waits for the same tunnel
        time.sleep(1)
        assert appjail(helper, MEMBER, "stop", "stopped").returncode == 0
        for run in runs:
            _, errors = run.communicate(timeout=10)
            assert (run.returncode, errors) == (125, "appjail: jail 'stopped' was stopped before its tunnel "
                                                     "was up\n")
    finally:
        for run in runs:
            run.kill()
    assert nothing_left(lab, "aj-stopped") == []


def test_a_member_runs_curl_through_their_own_openvpn_tunnel_and_the_secrets_stay_theirs(helper, lab: Lab):
    member_file("creds.txt", f"{lab_openvpn.USER}\n{lab_openvpn.PASSWORD}\n")
    config = member_file("provider.ovpn", lab.ovpn_client(auth_file="creds.txt"))
    result = appjail(helper, MEMBER, "run", "--keep", "--name", "ovbus", "--openvpn", str(config), "--",
                     "curl", "-sS", "--max-time", "5", f"http://{lab.SERVER_ADDR}/", timeout=60)
    assert result.returncode == 0, result.stderr
    address = result.stdout.strip().removeprefix("client=")
    assert ipaddress.ip_address(address) in TUNNEL_NET, result.stdout
    (listed,) = jails(helper, MEMBER)
    assert listed["tunnel"]["state"] == "up" and listed["tunnel"]["up"] and listed["address"] == address
    logged = helper.log_path.read_text()
    assert "aj-ovbus: Initialization Sequence Completed" in logged, "openvpn's log is the helper's"
    for secret in (lab.ovpn_client_key(), lab_openvpn.PASSWORD):  # while openvpn runs, and after
        assert secret_anywhere(secret, logged) == [], f"{secret[:4]}... is nowhere but the member's files"
    assert appjail(helper, MEMBER, "stop", "ovbus").returncode == 0
    assert nothing_left(lab, "aj-ovbus") == []
    assert secret_anywhere(lab_openvpn.PASSWORD, helper.log_path.read_text()) == []


def openvpn_pids(lab: Lab, ifname: str) -> list[int]:
    with in_netns(lab.host_ns):
        return serving("openvpn", ifname)


def inspected(helper, name: str) -> dict:
    result = appjail(helper, MEMBER, "inspect", "--json", name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_an_openvpn_jail_outlives_its_helper_and_the_next_one_serves_its_tunnel(helper, lab: Lab):
    config = member_file("provider.ovpn", lab.ovpn_client())
    url = f"http://{lab.SERVER_ADDR}/"
    made = appjail(helper, MEMBER, "run", "--keep", "--name", "ovkeep", "--openvpn", str(config), "--", "true")
    assert made.returncode == 0, made.stderr
    (daemon,) = openvpn_pids(lab, "aj-ovkeep")
    helper.kill(signal.SIGKILL)
    restarted_at = helper.log_path.stat().st_size
    helper.start()
    assert openvpn_pids(lab, "aj-ovkeep") == [daemon], "the same openvpn, not a new one"
    (listed,) = jails(helper, MEMBER)
    assert listed["name"] == "ovkeep" and listed["tunnel"]["up"], listed
    tunnel = inspected(helper, "ovkeep")["tunnel"]
    assert tunnel["openvpn_state"] == "CONNECTED" and tunnel["connected_to"] == f"{lab.UPLINK_ADDR}:1194"
    assert 0 < tunnel["connected_since"] <= time.time()
    address = tunnel["addresses"][0].split("/")[0]
    result = appjail(helper, MEMBER, "run", "--name", "ovkeep", "--", "curl", "-sS", "--max-time", "5", url)
    assert result.stdout == f"client={address}\n", result.stderr

    lab.ovpn_server_down()  # its clients reconnect: a new device, which only the new helper can move in
    try:
        assert wait_until(lambda: not inspected(helper, "ovkeep")["tunnel"]["up"], 30)
    finally:
        lab.ovpn_start()
    assert wait_until(lambda: appjail(helper, MEMBER, "run", "--name", "ovkeep", "--", "curl", "-sS",
                                      "--max-time", "2", url).stdout.startswith("client="), 60)
    logged = helper.log_path.read_text()[restarted_at:]
    assert "openvpn aj-ovkeep (pid" in logged and "adopted" in logged
    assert "aj-ovkeep: tunnel up in the jail" in logged, "the new helper moved the new device in"
    assert "aj-ovkeep: (earlier) Initialization Sequence Completed" in logged, "openvpn's recent lines, again"
    assert logged.count("aj-ovkeep: Initialization Sequence Completed") == 1, "the reconnection, logged as it came"
    assert "MANAGEMENT:" not in logged and secret_anywhere(lab.ovpn_client_key(), logged) == []
    assert appjail(helper, MEMBER, "stop", "ovkeep").returncode == 0
    assert nothing_left(lab, "aj-ovkeep") == []


def test_a_restarted_helper_sweeps_a_jail_whose_openvpn_ended_and_an_openvpn_whose_jail_is_gone(helper, lab: Lab):
    config = member_file("provider.ovpn", lab.ovpn_client())
    for name in ("ovnodaemon", "ovnorecord"):
        made = appjail(helper, MEMBER, "run", "--keep", "--name", name, "--openvpn", str(config), "--", "true")
        assert made.returncode == 0, made.stderr
    helper.kill(signal.SIGKILL)
    (daemon,) = openvpn_pids(lab, "aj-ovnodaemon")
    os.kill(daemon, signal.SIGTERM)  # the test's helper started it
    (helper.run_dir / "jails" / "ovnorecord.json").unlink()
    assert wait_until(lambda: openvpn_pids(lab, "aj-ovnodaemon") == [], 10)
    helper.start()
    assert jails(helper, MEMBER) == []
    assert nothing_left(lab, "aj-ovnodaemon") == [] and nothing_left(lab, "aj-ovnorecord") == []
