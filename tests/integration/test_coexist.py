"""Jails on hosts with their own firewall: Docker's setup, ufw, firewalld, an admin's nftables.

Each host firewall is set up in the lab's host namespace only. For the ones
appjail handles, a NAT jail and a --vpn jail reach the server, the kill
switch lets nothing out beside the tunnel, a published port answers, doctor
says so, and after the last jail the host firewall is what it was.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import dbus
import pytest
from dbus.mainloop.glib import DBusGMainLoop

from appjail.helper.engine.engine import Engine
from appjail.helper.firewall.coexist import Coexistence
from appjail.lab import hostfirewalls
from appjail.lab.helper import LabHelper
from appjail.model import JailSpec, Publish

from .busstandins import bus_standin
from .conftest import residue_in_host, residue_machine_wide
from .helperlab import MEMBER, appjail, wait_until
from .test_engine import LAB_DNS, fetch

PUBLISHED = 6010
HANDLED = ("docker", "ufw", "firewalld")


@contextmanager
def host_firewall(kind: str, lab, bus, workdir: Path) -> Iterator[hostfirewalls.Firewalld | None]:
    if kind == "firewalld":
        with hostfirewalls.firewalld(lab.host_ns, bus.address, workdir / "firewalld.log") as daemon:
            yield daemon
        return
    setup = {"docker": hostfirewalls.docker, "ufw": hostfirewalls.ufw, "admin": hostfirewalls.admin_ruleset}[kind]
    with setup(lab.host_ns):
        yield None


def doctor(lab, bus) -> str:
    """`sudo appjail doctor` in the lab's host: its firewall lines."""
    result = lab.run_in(lab.host_ns, [sys.executable, "-c", "from appjail.cli import entry; entry()", "doctor"],
                        capture_output=True, text=True, env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus.address})
    return result.stdout


def kill_switch_leaks(lab, name: str) -> list[str]:
    """With the tunnel down, what a --vpn jail's steady stream puts on the uplink beside the tunnel."""
    capture = lab.capture(lab.host_uplink_if, lab.host_ns, "ip and not udp port 51820")
    sender = subprocess.Popen(
        ["ip", "netns", "exec", f"aj-{name}", sys.executable, "-c",
         "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         "while True:\n    try: s.sendto(b'x',('192.0.2.80',9))\n    except OSError: pass\n    time.sleep(0.01)\n"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab.wg_down()
    try:
        assert fetch(name, timeout=1).returncode != 0
        time.sleep(1)
    finally:
        lab.wg_up()
        sender.kill()
        sender.wait()
        packets = capture.stop()
    return packets


def published_answer(lab, name: str) -> str:
    server = subprocess.Popen(["ip", "netns", "exec", f"aj-{name}", sys.executable, "-m", "http.server", "8080",
                               "--bind", "0.0.0.0", "--directory", "/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{lab.HOST_UPLINK_ADDR}:{PUBLISHED}/"
    try:
        wait_until(lambda: lab.run_in(lab.uplink_ns, ["curl", "-s", "-o", "/dev/null", url]).returncode == 0, 10)
        return lab.run_in(lab.uplink_ns, ["curl", "-sS", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}",
                                          url], capture_output=True, text=True).stdout
    finally:
        server.kill()
        server.wait()


def assert_jails_work(engine: Engine, lab) -> None:
    engine.create(JailSpec("cxnat", dns=LAB_DNS), 1000)
    engine.create(JailSpec("cxvpn", vpn=lab.wg_ifname, dns=LAB_DNS), 1000)
    engine.create(JailSpec("cxpub", dns=LAB_DNS, publish=(Publish(PUBLISHED, 8080),)), 1000)
    assert fetch("cxnat").stdout == f"client={lab.HOST_UPLINK_ADDR}\n"
    assert fetch("cxvpn").stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n"
    assert kill_switch_leaks(lab, "cxvpn") == []
    assert wait_until(lambda: fetch("cxvpn", timeout=1).stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n", 15)
    assert published_answer(lab, "cxpub") == "200"


DOCTOR_SAYS = {
    "docker": "ip filter chain FORWARD (hook forward, policy drop): Docker (iptables-nft); "
              "appjail accepts aj-+ in DOCKER-USER now",
    "ufw": "ip filter chain FORWARD (hook forward, policy drop): ufw (iptables-nft); "
           "appjail accepts aj-+ at the top of FORWARD now",
    "firewalld": "inet firewalld chain filter_FORWARD (hook forward, policy accept): firewalld; "
                 "aj-+ is in its zone trusted now",
}


@pytest.mark.parametrize("kind", HANDLED)
def test_jails_pass_a_host_firewall_appjail_handles_and_leave_it_as_found(kind, lab, bus, coexist_engine, tmp_path):
    with host_firewall(kind, lab, bus, tmp_path):
        before = hostfirewalls.snapshot(lab.host_ns, bus.address)
        assert_jails_work(coexist_engine, lab)
        said = doctor(lab, bus)
        assert f"[     ok] nftables {DOCTOR_SAYS[kind]}" in said, said
        assert "[problem] nftables" not in said, said
        for jail in coexist_engine.list():
            coexist_engine.destroy(jail.name)
        assert hostfirewalls.snapshot(lab.host_ns, bus.address) == before


def test_an_admin_ruleset_is_left_alone_and_doctor_gives_the_lines(lab, bus, coexist_engine):
    with hostfirewalls.admin_ruleset(lab.host_ns):
        admin_table = ["nft", "-s", "list", "table", "inet", "filter"]
        untouched = hostfirewalls.run_in(lab.host_ns, admin_table)
        coexist_engine.create(JailSpec("cxadm", dns=LAB_DNS), 1000)
        assert fetch("cxadm", timeout=2).returncode != 0, "appjail does not edit an admin's chain"
        assert hostfirewalls.run_in(lab.host_ns, admin_table) == untouched
        said = doctor(lab, bus)
        assert ("[problem] nftables inet filter chain forward (hook forward, policy drop): drops jail traffic; "
                "appjail leaves this chain alone, add to it:") in said, said
        lines = [line.split("-> ", 1)[1] for line in said.splitlines() if "-> nft insert rule" in line]
        assert len(lines) == 3, said
        coexist_engine.destroy("cxadm")
        for line in lines:  # the admin does what doctor says
            hostfirewalls.run_in(lab.host_ns, shlex.split(line))
        before = hostfirewalls.snapshot(lab.host_ns)
        assert_jails_work(coexist_engine, lab)
        said = doctor(lab, bus)
        assert "inet filter chain forward (hook forward, policy drop): drops forwarded traffic, but accepts " \
               "appjail's interfaces" in said and "[problem] nftables" not in said, said
        for jail in coexist_engine.list():
            coexist_engine.destroy(jail.name)
        assert hostfirewalls.snapshot(lab.host_ns) == before


@pytest.mark.parametrize("kind", HANDLED)
def test_reconcile_after_a_crash_takes_the_openings_back(kind, lab, bus, in_host, tmp_path):
    connection = dbus.bus.BusConnection(bus.address, mainloop=DBusGMainLoop())
    run_dir = tmp_path / "run"

    def coexistence() -> Coexistence:
        return Coexistence(run_dir / "coexist.json", connection, bus_address=bus.address)

    with host_firewall(kind, lab, bus, tmp_path):
        before = hostfirewalls.snapshot(lab.host_ns, bus.address)
        crashed = Engine(run_dir=run_dir, coexist=coexistence())
        crashed.create(JailSpec("cxcrash", dns=LAB_DNS), 1000)
        assert hostfirewalls.snapshot(lab.host_ns, bus.address) != before
        del crashed  # the helper died: no teardown ran
        report = Engine(run_dir=run_dir, coexist=coexistence()).reconcile(adopt=False)
        assert any(item.startswith("coexist ") for item in report.removed), report.removed
        assert hostfirewalls.snapshot(lab.host_ns, bus.address) == before
    connection.close()
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_firewalld_gets_the_interfaces_back_after_a_reload_and_a_restart(lab, bus, helper, tmp_path):
    with hostfirewalls.firewalld(lab.host_ns, bus.address, tmp_path / "firewalld.log") as daemon:
        before = hostfirewalls.snapshot(lab.host_ns, bus.address)
        kept = appjail(helper, MEMBER, "run", "--keep", "--name", "cxfw", "--dns", LAB_DNS[0], "--", "true")
        assert kept.returncode == 0, kept.stderr
        assert daemon.zone_of("aj-+") == "trusted"
        daemon.call("removeInterface", "trusted", "aj-+", interface=hostfirewalls.FIREWALLD + ".zone")
        daemon.call("reload")  # a reload: the helper checks again
        assert wait_until(lambda: daemon.zone_of("aj-+") == "trusted", 10)
        daemon.stop()
        daemon.start()  # a restart forgets every runtime binding
        assert wait_until(lambda: daemon.zone_of("aj-+") == "trusted", 10)
        reached = appjail(helper, MEMBER, "run", "--name", "cxfw", "--", "curl", "-sS", "--max-time", "5",
                          f"http://{lab.SERVER_ADDR}/")
        assert reached.stdout == f"client={lab.HOST_UPLINK_ADDR}\n", reached.stderr
        assert appjail(helper, MEMBER, "stop", "cxfw").returncode == 0
        assert hostfirewalls.snapshot(lab.host_ns, bus.address) == before


def test_a_firewalld_that_refuses_makes_run_fail_in_one_sentence_leaving_nothing(lab, bus, users, tmp_path):
    with ExitStack() as stack:
        stack.enter_context(hostfirewalls.firewalld(lab.host_ns, bus.address, tmp_path / "firewalld.log"))
        before = hostfirewalls.snapshot(lab.host_ns, bus.address)
        helper = LabHelper(lab.host_ns, bus.address, tmp_path / "run", tmp_path / "helper.log")
        helper.start("--firewalld-zone", "nosuchzone")
        stack.callback(helper.stop_and_clean)
        refused = appjail(helper, MEMBER, "run", "--name", "cxno", "--dns", LAB_DNS[0], "--", "true")
        assert refused.returncode == 125
        assert refused.stderr.count("\n") == 1 and "firewalld refused to put aj-+ into its zone nosuchzone" \
            in refused.stderr, refused.stderr
        assert hostfirewalls.snapshot(lab.host_ns, bus.address) == before
        assert residue_machine_wide() == []


def test_an_engine_without_a_bus_still_passes_docker(lab, engine):
    """The plain engine (no bus, as in the other tests) handles the x_tables frameworks all the same."""
    with hostfirewalls.docker(lab.host_ns):
        engine.create(JailSpec("cxplain", dns=LAB_DNS), 1000)
        assert fetch("cxplain").stdout == f"client={lab.HOST_UPLINK_ADDR}\n"
        engine.destroy("cxplain")



def firewalld_standin(bus_address: str) -> AbstractContextManager[subprocess.Popen[str]]:
    """firewalld as it is while it loads: its name taken, its calls held (firewalld_standin.py)."""
    return bus_standin("firewalld_standin.py", bus_address)


def _zone_signatures(bus_address: str) -> dict[str, tuple[str, str]]:
    """method -> (in, out) signatures of firewalld's zone interface, from its introspection."""
    import xml.etree.ElementTree as ET

    bus = dbus.bus.BusConnection(bus_address)
    try:
        xml = dbus.Interface(bus.get_object(hostfirewalls.FIREWALLD, "/org/fedoraproject/FirewallD1"),
                             "org.freedesktop.DBus.Introspectable").Introspect()
    finally:
        bus.close()
    (zone,) = [node for node in ET.fromstring(str(xml)).iter("interface")
               if node.get("name") == hostfirewalls.FIREWALLD + ".zone"]
    return {method.get("name"): tuple("".join(arg.get("type") for arg in method.iter("arg")
                                              if arg.get("direction", "in") == direction)
                                      for direction in ("in", "out"))
            for method in zone.iter("method")}


def test_the_firewalld_standin_answers_what_the_real_one_does(lab, bus, tmp_path):
    from .firewalld_standin import SIGNATURES

    with hostfirewalls.firewalld(lab.host_ns, bus.address, tmp_path / "firewalld.log"):
        real = _zone_signatures(bus.address)
    assert {method: real[method] for method in SIGNATURES} == SIGNATURES


def test_a_firewalld_still_loading_holds_up_no_caller(lab, bus, helper):
    """firewalld takes its name seconds before it answers (it loads its configuration first): the helper,
    which asks it to put aj-+ into its zone as soon as it appears, answers everyone meanwhile, and puts
    aj-+ there once firewalld answers."""
    kept = appjail(helper, MEMBER, "run", "--keep", "--name", "cxload", "--dns", LAB_DNS[0], "--", "true")
    assert kept.returncode == 0, kept.stderr
    with firewalld_standin(bus.address) as firewalld:
        assert firewalld.stdout.readline() == "asked getZoneOfInterface aj-+\n"  # and no answer yet
        listed = appjail(helper, MEMBER, "ls", timeout=10)
        assert listed.returncode == 0 and "cxload" in listed.stdout, listed.stderr
        firewalld.stdin.write("loaded\n")
        firewalld.stdin.flush()
        assert firewalld.stdout.readline() == "asked addInterface trusted aj-+\n"
    assert appjail(helper, MEMBER, "stop", "cxload").returncode == 0
