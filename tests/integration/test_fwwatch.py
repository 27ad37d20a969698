"""The host's firewall changes under running jails: nothing promised is reached meanwhile, and the
network is back within 2 s.

Jails of every kind run (NAT, --deny, --no-lan, --publish, --vpn, --wireguard) while
each jail probes, every 100 ms, what it must never reach: a service of the lab
host's own, a denied destination, a LAN one; the --vpn jail a server beside
its tunnel. Then a host tool changes the lab host's firewall. Listeners count
what reached them; a capture on the uplink counts the --vpn jail's packets
outside the tunnel.

The suite runs once per backend (APPJAIL_FIREWALL), and each change runs in
both runs unless it is meaningless for a backend (deleting `inet appjail`
where appjail has no such table). The tools are the real ones: Debian's
dockerd (writing with the iptables build of a host that backend is chosen
for), ufw and firewalld (on the lab's bus, which the engine watches as the
helper does). A helper restarted after a flush puts the rules back and says
so in `ls --json` and `inspect`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from appjail.helper.firewall import choice
from appjail.helper.firewall.fwwatch import FirewallWatch
from appjail.helper.firewall.rules import ROLE_OUT
from appjail.lab import hostfirewalls
from appjail.model import JailSpec, Publish

from .helperlab import MEMBER, appjail, jails
from .test_engine import LAB_DNS, fetch, wait_until

FORBIDDEN_PORT, BESIDE_TUNNEL_PORT = 7001, 7003
LAN_ADDR = "10.250.0.1"  # a LAN destination, on the lab's uplink
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
    targets = [(host, int(port)) for host, port in (target.split(":") for target in sys.argv[1:])]
    while True:  # until killed
        for target in targets:
            probe = socket.socket()
            probe.settimeout(0.05)
            try:
                probe.connect(target)
                print("reached", *target, time.monotonic(), flush=True)
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


IPTABLES_BUILD = {"nftables": "nft", "xtables": "legacy"}[BACKEND]  # the host's iptables, where it is chosen
# name -> (the change, the backend whose rules it removes: there each jail records a repair, whether it
# means anything on the other one: deleting `inet appjail` or flushing legacy tables does not)
CHANGES: dict[str, tuple[Callable[[str], None], str, bool]] = {
    "nft flush ruleset": (lambda ns: _nft(ns, "flush", "ruleset"), choice.NFTABLES, True),
    "nft delete table inet appjail": (lambda ns: _nft(ns, "delete", "table", "inet", "appjail"), choice.NFTABLES,
                                      False),
    "iptables-restore of a dump taken before the jails": (
        lambda ns: _restore(ns, f"iptables-{IPTABLES_BUILD}-restore", EMPTY_TABLES), choice.XTABLES, True),
    "iptables -F": (lambda ns: hostfirewalls.run_in(ns, ["iptables-legacy", "-F"]), choice.XTABLES, False),
}
HERE = sorted(name for name, (_change, removes, anywhere) in CHANGES.items() if anywhere or removes == BACKEND)


@pytest.fixture
def engine(coexist_engine):
    """The engine as the helper builds it, firewalld's signals served."""
    return coexist_engine


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


@contextmanager
def probing(name: str, *targets: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(["ip", "netns", "exec", f"aj-{name}", sys.executable, "-c", PROBE, *targets],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def reached(proc: subprocess.Popen[str]) -> list[list[str]]:
    """What the probe reached: [host, port, when] each time."""
    proc.kill()
    return [line.split()[1:] for line in proc.communicate()[0].splitlines()]


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


def assert_nothing_reached_and_back(engine, lab, targets: dict[str, list[str]], change) -> None:
    """Probe across the change: nothing promised is reached, and the NAT jail's longest time without
    network is under BACK_WITHIN_S (measured by its connections every 100 ms: a change may take
    seconds itself, as dockerd's and firewalld's starts do)."""
    with ExitStack() as stack:
        host = stack.enter_context(listening(lab, lab.host_ns, FORBIDDEN_PORT))
        far = stack.enter_context(listening(lab, lab.uplink_ns, FORBIDDEN_PORT))
        beside = lab.capture(lab.host_uplink_if, lab.host_ns, f"tcp port {BESIDE_TUNNEL_PORT}")
        probes = {name: stack.enter_context(probing(name, *each)) for name, each in targets.items()}
        online = stack.enter_context(probing("fwnat", f"{lab.SERVER_ADDR}:{lab.HTTP_PORT}"))
        time.sleep(0.5)
        change(lab.host_ns)
        back = wait_until(lambda: fetch("fwnat", timeout=0.5).stdout == f"client={lab.HOST_UPLINK_ADDR}\n",
                          BACK_WITHIN_S + 3, interval=0.05)
        time.sleep(0.3)
        times = [float(when) for _host, _port, when in reached(online)]
        assert {name: reached(proc) for name, proc in probes.items()} == {name: [] for name in targets}
        assert accepted(host) == [] and accepted(far) == []
        assert beside.stop() == [], "the --vpn jail sent beside its tunnel"
    assert back, "the NAT jail's network did not come back"
    outage = max(later - earlier for earlier, later in zip(times, times[1:]))
    print(f"longest time without network: {outage:.2f} s", flush=True)  # the figure, with pytest -s
    assert outage < BACK_WITHIN_S, f"no network for {outage:.2f} s"
    assert fetch("fwvpn").stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n"
    assert fetch("fwpub").stdout == f"client={lab.HOST_UPLINK_ADDR}\n"
    assert fetch("fwwg").returncode == 0


@pytest.mark.parametrize("change", HERE)
def test_a_host_tool_changes_the_firewall_nothing_is_reached_and_the_network_is_back(
        change, engine, lab, all_kinds):
    making, removes, _anywhere = CHANGES[change]
    with hostfirewalls.new_nft_tables_removed(lab.host_ns):  # iptables-nft-restore makes its tables
        assert_nothing_reached_and_back(engine, lab, all_kinds, making)
    if removes == BACKEND:  # every NAT jail's repair noted (a change seen in two looks is noted by the second)
        assert wait_until(lambda: all(jail.repairs.count >= 1 and jail.repairs.what.startswith("host firewall changed")
                                      for jail in engine.list() if jail.tunnel is None), BACK_WITHIN_S)


@pytest.fixture
def docker_daemon(lab):
    """Debian's dockerd, for the test to start after the jails; stopped and gone after them."""
    with hostfirewalls.dockerd(lab.host_ns, IPTABLES_BUILD) as daemon:
        yield daemon


def test_a_real_dockerd_started_after_the_jails_and_restarted(docker_daemon, engine, lab, all_kinds, caplog):
    """dockerd's FORWARD policy DROP: the openings go into its DOCKER-USER, where they stay across its
    restart; each start moves its jumps above the jails' hooks (x_tables), which go back to the top."""
    def restart(ns: str) -> None:
        docker_daemon.stop()
        docker_daemon.start()

    for change in (lambda ns: docker_daemon.start(), restart):
        assert_nothing_reached_and_back(engine, lab, all_kinds, change)
        # the jail's own chain sees its packets first again (dockerd moves its jump to the top; legacy
        # x_tables is looked at every POLL_S)
        sent = packets_out(engine, "fwnat")
        assert wait_until(lambda: fetch("fwnat").returncode == 0 and packets_out(engine, "fwnat") > sent,
                          BACK_WITHIN_S, interval=0.1), "the jail's chain does not see its packets"
    assert "Docker, accepting aj-+ in DOCKER-USER" in "\n".join(record.message for record in caplog.records)


def packets_out(engine, name: str) -> int:
    """What the jail's chain counted going out."""
    chain = engine.get(name).firewall_rules
    return engine.firewall.read_counters({chain.name: chain.roles})[chain.name][ROLE_OUT][0]


def test_a_firewalld_started_after_the_jails_restarted_and_reloaded(engine, lab, bus, all_kinds, tmp_path):
    """firewalld sends what is in no zone of its to its default zone, which forwards nothing: aj-+ goes
    into its trusted zone again each time (its D-Bus name changed owner, or it said Reloaded)."""
    def restart(ns: str) -> None:
        daemon.stop()
        daemon.start()

    daemon = hostfirewalls.Firewalld(lab.host_ns, bus.address, tmp_path / "firewalld.log")
    try:
        for change in (lambda ns: daemon.start(), restart,
                       lambda ns: hostfirewalls.run_in(ns, ["firewall-cmd", "--reload"],
                                                       env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus.address})):
            assert_nothing_reached_and_back(engine, lab, all_kinds, change)
            assert daemon.zone_of("aj-+") == "trusted"
    finally:
        daemon.stop()


FLUSH = {"nftables": "nft flush ruleset", "xtables": "iptables-restore of a dump taken before the jails"}[BACKEND]


def test_a_restarted_helper_puts_back_what_was_flushed_meanwhile_and_ls_and_inspect_say_so(helper, lab):
    kept = appjail(helper, MEMBER, "run", "--keep", "--name", "fwkeep", "--dns", LAB_DNS[0], "--", "true")
    assert kept.returncode == 0, kept.stderr
    helper.kill(signal.SIGTERM)
    CHANGES[FLUSH][0](lab.host_ns)  # while no helper watched
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


# a tool's change, and how to take it back
MEANWHILE = {"nftables": (["nft", "add", "table", "ip", "meanwhile"], ["nft", "delete", "table", "ip", "meanwhile"]),
             "x_tables": (["iptables-legacy", "-N", "meanwhile"], ["iptables-legacy", "-X", "meanwhile"])}


@pytest.mark.parametrize("kind", sorted(MEANWHILE))
def test_a_change_made_while_a_check_runs_is_checked_too(kind, in_host):
    """The check before dockerd made DOCKER-USER found nothing to do; DOCKER-USER, made meanwhile,
    must not pass for something the check saw."""
    make, undo = MEANWHILE[kind]
    looked: list[str] = []

    def check(where: str) -> bool:
        looked.append(where)
        if len(looked) == 1:
            hostfirewalls.run_in(in_host.host_ns, make)  # another tool, while appjail looks
        return False

    watch = FirewallWatch(check)
    watch.start()
    try:
        hostfirewalls.run_in(in_host.host_ns, ["nft", "add", "table", "ip", "first"])
        assert wait_until(lambda: len(looked) >= 2, 3), looked
        assert looked[1].startswith(kind)
    finally:
        watch.stop()
        hostfirewalls.run_in(in_host.host_ns, ["nft", "delete", "table", "ip", "first"])
        hostfirewalls.run_in(in_host.host_ns, undo)


def test_run_with_a_vpn_interface_that_does_not_exist_says_so_and_stays_closed(helper, lab):
    result = appjail(helper, MEMBER, "run", "--vpn", "wg9", "--dns", LAB_DNS[0], "--", "curl", "-sS",
                     "--max-time", "2", f"http://{lab.SERVER_ADDR}/")
    assert "warning: interface wg9 does not exist: the jail's traffic is blocked (kill switch) until it appears" \
        in result.stderr, result.stderr
    assert result.returncode != 0 and result.stdout == ""


def test_ufw_enabled_after_the_jails_and_reloaded(engine, lab, all_kinds):
    """ufw's enable sets FORWARD's policy to DROP: the openings go to the top of FORWARD; its reload keeps them."""
    with ExitStack() as stack:
        assert_nothing_reached_and_back(engine, lab, all_kinds, lambda ns: stack.enter_context(hostfirewalls.ufw(ns)))
        assert_nothing_reached_and_back(engine, lab, all_kinds, lambda ns: hostfirewalls.run_in(ns, ["ufw", "reload"]))
    assert "ufw, accepting aj-+ in FORWARD" in engine.get("fwnat").repairs.what
