"""The host's firewall changes under running jails: nothing promised is reached meanwhile, and the
network is back within 2 s.

Jails of every kind run (NAT, --deny, --no-lan, --publish, --vpn, --wireguard) while
each jail probes, every 100 ms, what it must never reach: a service of the lab
host's own, a denied destination, a LAN one; the --vpn jail a server beside
its tunnel. Then a host tool changes the lab host's firewall. Listeners count
what reached them; a capture on the uplink counts the --vpn jail's packets
outside the tunnel.

Each change runs on the backend the run uses (APPJAIL_FIREWALL), so the
suite's two runs cover both; Docker's setup is the lab's (hostfirewalls.docker:
iptables-nft rules as dockerd writes them), ufw the real one. A helper
restarted after a flush puts the rules back and says so in `ls --json` and
`inspect`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from appjail.helper.firewall import choice
from appjail.lab import hostfirewalls
from appjail.model import JailSpec, Publish

from .helperlab import MEMBER, appjail, jails
from .test_engine import LAB_DNS, fetch, wait_until

FORBIDDEN_PORT, BESIDE_TUNNEL_PORT = 7001, 7003
LAN_ADDR = "10.250.0.1"  # a LAN destination, on the lab's uplink
PROBE_S = 4.0
BACK_WITHIN_S = 2.0
EMPTY_TABLES = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n" \
               "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
               ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"  # iptables-save of a host before the jails
LISTENER = textwrap.dedent("""
    import socket, sys
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", int(sys.argv[1])))
    server.listen(64)
    print("ready", flush=True)
    while True:
        peer, address = server.accept()
        print("accepted", address[0], peer.getsockname()[0], flush=True)
        peer.close()
""")
PROBE = textwrap.dedent("""
    import socket, sys, time
    targets = [(host, int(port)) for host, port in (target.split(":") for target in sys.argv[2:])]
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        for target in targets:
            probe = socket.socket()
            probe.settimeout(0.05)
            try:
                probe.connect(target)
                print("reached", *target, flush=True)
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.1)
""")
BACKEND = choice.choose().name


def _nft(ns: str, *args: str) -> None:
    hostfirewalls.run_in(ns, ["nft", *args])


def _restore(ns: str, binary: str, dump: str) -> None:
    subprocess.run(["nsenter", f"--net=/run/netns/{ns}", binary], input=dump, text=True, check=True)


CHANGES = {
    "nftables": {
        "nft flush ruleset": lambda ns: _nft(ns, "flush", "ruleset"),
        "nft delete table inet appjail": lambda ns: _nft(ns, "delete", "table", "inet", "appjail"),
    },
    "xtables": {
        "iptables-restore of a dump taken before the jails": lambda ns: _restore(ns, "iptables-legacy-restore",
                                                                                 EMPTY_TABLES),
        "iptables -F": lambda ns: hostfirewalls.run_in(ns, ["iptables-legacy", "-F"]),
    },
}[BACKEND]


@contextmanager
def listening(lab, ns: str, port: int) -> Iterator[subprocess.Popen[str]]:
    listener = lab.popen_in(ns, [sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline() == "ready\n"
        yield listener
    finally:
        listener.kill()


def accepted(listener: subprocess.Popen[str]) -> list[str]:
    listener.kill()
    return listener.communicate()[0].splitlines()


def probe(name: str, *targets: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", f"aj-{name}", sys.executable, "-c", PROBE, str(PROBE_S),
                             *targets], stdout=subprocess.PIPE, text=True)


@pytest.fixture
def all_kinds(engine, lab):
    """A jail of each kind, and the lab's LAN destination; the probes' targets per jail."""
    lab.run_in(lab.uplink_ns, ["ip", "address", "add", f"{LAN_ADDR}/32", "dev", "lo"], check=True)
    host_service = [f"{lab.HOST_UPLINK_ADDR}:{FORBIDDEN_PORT}"]
    made = {
        "fwnat": JailSpec("fwnat", dns=LAB_DNS),
        "fwdeny": JailSpec("fwdeny", dns=LAB_DNS, deny=(f"{lab.SERVER_ADDR}/32",)),
        "fwlan": JailSpec("fwlan", dns=LAB_DNS, no_lan=True),
        "fwpub": JailSpec("fwpub", dns=LAB_DNS, publish=(Publish(6020, 8080),)),
        "fwvpn": JailSpec("fwvpn", dns=LAB_DNS, vpn=lab.wg_ifname),
    }
    targets = {}
    for name, spec in made.items():
        jail = engine.create(spec, 1000)
        targets[name] = [*host_service, f"{jail.addressing.host_address}:{FORBIDDEN_PORT}"]
    targets["fwdeny"].append(f"{lab.SERVER_ADDR}:{FORBIDDEN_PORT}")
    targets["fwlan"].append(f"{LAN_ADDR}:{FORBIDDEN_PORT}")
    targets["fwvpn"].append(f"{lab.SERVER_ADDR}:{BESIDE_TUNNEL_PORT}")
    engine.create(JailSpec("fwwg"), 1000, wireguard=_wireguard(lab))
    try:
        yield targets
    finally:
        lab.run_in(lab.uplink_ns, ["ip", "address", "del", f"{LAN_ADDR}/32", "dev", "lo"])
        for jail in engine.list():
            engine.destroy(jail.name, jail.owner_uid)
        lab.wg_peers_forget()


def _wireguard(lab):
    from appjail.wgconf import parse

    return parse(lab.wg_peer("203.0.113.9"))


def assert_nothing_reached_and_back(engine, lab, targets: dict[str, list[str]], change) -> float:
    """Probe across the change; the seconds until every kind of jail had its network back."""
    with listening(lab, lab.host_ns, FORBIDDEN_PORT) as host, listening(lab, lab.uplink_ns, FORBIDDEN_PORT) as far:
        beside = lab.capture(lab.host_uplink_if, lab.host_ns, f"tcp port {BESIDE_TUNNEL_PORT}")
        probes = {name: probe(name, *each) for name, each in targets.items()}
        time.sleep(0.5)
        change(lab.host_ns)
        changed = time.monotonic()
        back = wait_until(lambda: fetch("fwnat", timeout=0.5).stdout == f"client={lab.HOST_UPLINK_ADDR}\n",
                          BACK_WITHIN_S + 3, interval=0.05)
        took = time.monotonic() - changed
        reached = {name: proc.communicate()[0].splitlines() for name, proc in probes.items()}
        assert reached == {name: [] for name in targets}
        assert accepted(host) == [] and accepted(far) == []
        assert beside.stop() == [], "the --vpn jail sent beside its tunnel"
    assert back, "the NAT jail's network did not come back"
    assert fetch("fwvpn").stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n"
    assert fetch("fwpub").stdout == f"client={lab.HOST_UPLINK_ADDR}\n"
    assert fetch("fwwg").returncode == 0
    return took


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_host_tool_changes_the_firewall_nothing_is_reached_and_the_network_is_back(
        change, engine, lab, all_kinds):
    took = assert_nothing_reached_and_back(engine, lab, all_kinds, CHANGES[change])
    assert took < BACK_WITHIN_S, f"network back after {took:.2f} s"
    repaired = [jail.repairs for jail in engine.list() if jail.tunnel is None]
    assert all(repairs.count >= 1 and repairs.what.startswith("host firewall changed") for repairs in repaired)


def test_docker_set_up_after_the_jails_and_restarted(engine, lab, all_kinds):
    """dockerd's FORWARD policy DROP: the openings go into its DOCKER-USER; again after it rebuilt that."""
    def restart_docker(ns: str) -> None:
        for argv in (["iptables-nft", "-F", "DOCKER-USER"], ["iptables-nft", "-A", "DOCKER-USER", "-j", "RETURN"]):
            hostfirewalls.run_in(ns, argv)

    with ExitStack() as stack:
        took = assert_nothing_reached_and_back(engine, lab, all_kinds,
                                               lambda ns: stack.enter_context(hostfirewalls.docker(ns)))
        assert took < BACK_WITHIN_S, f"network back after {took:.2f} s"
        took = assert_nothing_reached_and_back(engine, lab, all_kinds, restart_docker)
        assert took < BACK_WITHIN_S, f"network back after {took:.2f} s"
    assert "Docker, accepting aj-+ in DOCKER-USER" in engine.get("fwnat").repairs.what


FLUSH = {"nftables": "nft flush ruleset", "xtables": "iptables-restore of a dump taken before the jails"}[BACKEND]


def test_a_restarted_helper_puts_back_what_was_flushed_meanwhile_and_ls_and_inspect_say_so(helper, lab):
    kept = appjail(helper, MEMBER, "run", "--keep", "--name", "fwkeep", "--dns", LAB_DNS[0], "--", "true")
    assert kept.returncode == 0, kept.stderr
    helper.kill(signal.SIGTERM)
    CHANGES[FLUSH](lab.host_ns)  # while no helper watched
    helper.start()
    (listed,) = [jail for jail in jails(helper) if jail["name"] == "fwkeep"]
    assert listed["repairs"]["count"] == 1, listed
    assert listed["repairs"]["what"].startswith("host firewall changed (while no helper watched)")
    reached = appjail(helper, MEMBER, "run", "--name", "fwkeep", "--", "curl", "-sS", "--max-time", "5",
                      f"http://{lab.SERVER_ADDR}/")
    assert reached.stdout == f"client={lab.HOST_UPLINK_ADDR}\n", reached.stderr
    page = appjail(helper, MEMBER, "inspect", "fwkeep").stdout
    assert "rules repaired 1 time, last at " in page, page
    assert appjail(helper, MEMBER, "stop", "fwkeep").returncode == 0


def test_run_with_a_vpn_interface_that_does_not_exist_says_so_and_stays_closed(helper, lab):
    result = appjail(helper, MEMBER, "run", "--vpn", "wg9", "--dns", LAB_DNS[0], "--", "curl", "-sS",
                     "--max-time", "2", f"http://{lab.SERVER_ADDR}/")
    assert "warning: interface wg9 does not exist: the jail's traffic is blocked (kill switch) until it appears" \
        in result.stderr, result.stderr
    assert result.returncode != 0 and result.stdout == ""


def test_ufw_enabled_after_the_jails_and_reloaded(engine, lab, all_kinds):
    """ufw's enable sets FORWARD's policy to DROP: the openings go to the top of FORWARD; its reload keeps them."""
    with ExitStack() as stack:
        took = assert_nothing_reached_and_back(engine, lab, all_kinds,
                                               lambda ns: stack.enter_context(hostfirewalls.ufw(ns)))
        assert took < BACK_WITHIN_S, f"network back after {took:.2f} s"
        took = assert_nothing_reached_and_back(engine, lab, all_kinds,
                                               lambda ns: hostfirewalls.run_in(ns, ["ufw", "reload"]))
        assert took < BACK_WITHIN_S, f"network back after {took:.2f} s"
    assert "ufw, accepting aj-+ in FORWARD" in engine.get("fwnat").repairs.what
