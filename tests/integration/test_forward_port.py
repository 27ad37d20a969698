"""A port forwarded by the VPN's gateway (--forward-port natpmp), against a real NAT-PMP server.

Debian's miniupnpd runs in the lab's VPN endpoint (the internet namespace,
beside the WireGuard server) and maps ports from its public address to the
tunnel's peers. A jail with a WireGuard tunnel of its own asks it from
inside, renews the lease, and its listener is reached from the internet
through the tunnel; the user sees the port in `inspect` and gets it in the
environment and a file.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appjail.helper.engine.engine import Engine
from appjail.helper.kernel import netns
from appjail.helper.engine.portforward import Forwards
from appjail.lab import Lab
from appjail.model import JailSpec
from appjail.wgconf import parse

from .conftest import residue_in_host, residue_machine_wide
from .helperlab import MEMBER, appjail, wait_until

LEASE_S = 4  # asked by the engine below: a renewal every 2 s


@pytest.fixture(scope="module", autouse=True)
def server_forgets_these_tests_peers(lab: Lab):
    yield
    lab.wg_peers_forget()


@pytest.fixture
def natpmp(lab: Lab):
    with lab.natpmp_server() as far:
        yield far  # the internet beyond the VPN's gateway


def listener(netns_name: str, port: int) -> subprocess.Popen:
    """A TCP server in the jail on PORT that answers `jailed` and closes, up once it says so."""
    code = ("import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
            f"s.bind(('0.0.0.0',{port}));s.listen();print('up',flush=True)\n"
            "while True:\n c,_=s.accept();c.sendall(b'jailed\\n');c.close()")
    proc = subprocess.Popen(["ip", "netns", "exec", netns_name, sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    return proc


def fetch(lab: Lab, address: str, port: int, ns: str) -> str:
    """What a machine in namespace NS gets at ADDRESS:PORT."""
    code = (f"import socket;c=socket.create_connection(({address!r},{port}),timeout=3);"
            "print(c.makefile().readline(),end='')")
    result = lab.run_in(ns, [sys.executable, "-c", code], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else f"error: {result.stderr.strip()[-200:]}"


def test_a_forwarded_port_is_mapped_renewed_and_reaches_the_jail_through_its_tunnel(in_host: Lab, tmp_path,
                                                                                     natpmp):
    lab = in_host
    engine = Engine(run_dir=tmp_path / "run", forwards=Forwards(tmp_path / "run/forwarded", netns,
                                                                       lifetime=LEASE_S))
    spec = JailSpec("fwd", forward_port=f"natpmp:{lab.WG_SERVER_TUNNEL_ADDR}")
    jail = engine.create(spec, 1000, wireguard=parse(lab.wg_peer("203.0.113.30")))
    try:
        assert wait_until(lambda: jail.forwarder.status()["state"] == "mapped", 15), jail.forwarder.status()
        status = jail.forwarder.status()
        port = status["port"]
        assert 1024 <= port <= 65535 and status["gateway"] == lab.WG_SERVER_TUNNEL_ADDR
        assert 0 < status["expires"] - time.time() <= LEASE_S + 1
        port_file = tmp_path / "run/forwarded" / jail.netns
        assert port_file.read_text() == f"{port}\n"
        assert (os.stat(port_file).st_uid, os.stat(port_file).st_mode & 0o777) == (1000, 0o400)
        # renewed before the lease ends, the same port each time
        assert wait_until(lambda: jail.forwarder.status()["renewals"] >= 2, 4 * LEASE_S)
        assert jail.forwarder.status()["port"] == port and jail.forwarder.status()["state"] == "mapped"
        served = listener(jail.netns, port)
        try:
            assert wait_until(lambda: fetch(lab, lab.NATPMP_PUBLIC_ADDR, port, natpmp) == "jailed\n", 10), \
                fetch(lab, lab.NATPMP_PUBLIC_ADDR, port, natpmp)
        finally:
            served.kill()
            served.wait()
    finally:
        engine.destroy("fwd", 1000)
        engine.close()
    assert not port_file.exists()
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_a_vpn_jails_forwarded_port_comes_in_through_the_vpn_only(in_host: Lab, tmp_path, natpmp):
    lab = in_host
    engine = Engine(run_dir=tmp_path / "run", forwards=Forwards(tmp_path / "run/forwarded", netns,
                                                                       lifetime=LEASE_S))
    spec = JailSpec("fvpn", vpn=lab.wg_ifname, dns=(lab.DNS_ADDR,),
                    forward_port=f"natpmp:{lab.WG_SERVER_TUNNEL_ADDR}")
    jail = engine.create(spec, 1000)
    try:
        assert wait_until(lambda: jail.forwarder.status()["state"] == "mapped", 15), jail.forwarder.status()
        port = jail.forwarder.status()["port"]
        assert wait_until(lambda: jail.forwarder.status()["renewals"] >= 1, 4 * LEASE_S)
        served = listener(jail.netns, port)
        try:
            assert wait_until(lambda: fetch(lab, lab.NATPMP_PUBLIC_ADDR, port, natpmp) == "jailed\n", 10), \
                fetch(lab, lab.NATPMP_PUBLIC_ADDR, port, natpmp)
            # the host's other ways in do not lead to it: the uplink at the host's address
            assert fetch(lab, lab.HOST_UPLINK_ADDR, port, ns=lab.uplink_ns).startswith("error")
        finally:
            served.kill()
            served.wait()
    finally:
        engine.destroy("fvpn", 1000)
        engine.close()
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_a_gateway_that_stops_answering_loses_the_port_and_it_comes_back(in_host: Lab, tmp_path):
    lab = in_host
    engine = Engine(run_dir=tmp_path / "run", forwards=Forwards(tmp_path / "run/forwarded", netns,
                                                                       lifetime=LEASE_S))
    spec = JailSpec("fwl", forward_port=f"natpmp:{lab.WG_SERVER_TUNNEL_ADDR}")
    try:
        with lab.natpmp_server():
            jail = engine.create(spec, 1000, wireguard=parse(lab.wg_peer("203.0.113.31")))
            assert wait_until(lambda: jail.forwarder.status()["state"] == "mapped", 15)
        port_file = tmp_path / "run/forwarded" / jail.netns
        assert wait_until(lambda: jail.forwarder.status()["state"] == "lost", 4 * LEASE_S)
        assert jail.forwarder.status()["error"] and not port_file.exists()
        with lab.natpmp_server():
            assert wait_until(lambda: jail.forwarder.status()["state"] == "mapped", 30)
            assert port_file.exists()
    finally:
        engine.destroy("fwl", 1000)
        engine.close()


def test_a_user_sees_the_forwarded_port_and_programs_get_it(helper, lab, natpmp):
    config = Path(os.path.expanduser(f"~{MEMBER}")) / "fwd.conf"
    config.write_text(lab.wg_peer("203.0.113.32"))
    os.chown(config, *(os.stat(config.parent)[4:6]))
    config.chmod(0o600)
    forward = f"natpmp:{lab.WG_SERVER_TUNNEL_ADDR}"
    made = appjail(helper, MEMBER, "run", "--keep", "--name", "fwu", "--wireguard", str(config),
                   "--forward-port", forward, "--", "true")
    assert made.returncode == 0, made.stderr
    try:
        def shown() -> dict:
            return json.loads(appjail(helper, MEMBER, "inspect", "--json", "fwu").stdout)["forwarded_port"]
        assert wait_until(lambda: shown()["state"] == "mapped", 15), shown()
        port = shown()["port"]
        human = appjail(helper, MEMBER, "inspect", "fwu").stdout
        assert f"forwarded port {port} (natpmp from {lab.WG_SERVER_TUNNEL_ADDR}" in human, human
        listed = json.loads(appjail(helper, MEMBER, "ls", "--json").stdout)
        assert [j["forwarded_port"]["port"] for j in listed if j["name"] == "fwu"] == [port]
        told = appjail(helper, MEMBER, "run", "--name", "fwu", "--", "sh", "-c",
                       'echo "$APPJAIL_FORWARDED_PORT $APPJAIL_FORWARDED_PORT_FILE"')
        port_file = helper.run_dir / "forwarded" / shown_netns(helper)
        assert told.stdout == f"{port} {port_file}\n", told.stderr
        # the owner's (the lab helper's run directory is pytest's, which only root passes)
        assert port_file.read_text() == f"{port}\n" and os.stat(port_file).st_uid == pwd.getpwnam(MEMBER).pw_uid
    finally:
        assert appjail(helper, MEMBER, "stop", "fwu").returncode == 0
        config.unlink()


def shown_netns(helper) -> str:
    return json.loads(appjail(helper, MEMBER, "inspect", "--json", "fwu").stdout)["netns"]


def test_forward_port_needs_a_vpn(helper, lab):
    refused = appjail(helper, MEMBER, "run", "--dns", "192.0.2.53", "--forward-port", "natpmp", "--", "true")
    assert refused.returncode == 125
    assert refused.stderr.strip().endswith("--forward-port needs a VPN (--vpn, --wireguard or --openvpn): "
                                           "a port is forwarded by the VPN's gateway"), refused.stderr
