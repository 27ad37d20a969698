"""The headline command without --dns: a --vpn jail asks the servers the system has for the VPN
(here systemd-resolved's per-link ones, from a stand-in on the tests' bus), through the tunnel;
without any it is refused with a sentence naming --dns, and nothing is made."""

from __future__ import annotations

import socket
import subprocess
from contextlib import AbstractContextManager

from appjail.lab import in_netns

from .busstandins import bus_standin
from .helperlab import DNS, MEMBER, appjail, jails


def resolved_standin(bus_address: str, *links: str) -> AbstractContextManager[subprocess.Popen[str]]:
    return bus_standin("resolved_standin.py", bus_address, *links)


def vpn_index(lab) -> int:
    with in_netns(lab.host_ns):  # the helper's namespace, where it looks the interface up
        return socket.if_nametoindex(lab.wg_ifname)


def test_a_vpn_jail_without_dns_asks_resolveds_servers_for_the_vpn_through_it(helper, lab):
    index = vpn_index(lab)
    with resolved_standin(helper.bus_address, f"{index}={DNS}", f"{index + 1000}=192.168.1.1") as standin:
        result = appjail(helper, MEMBER, "run", "--vpn", lab.wg_ifname, "--", "getent", "hosts",
                         "vpn-dns.lab.test")
        standin.terminate()
        assert f"asked {index}\n" in standin.stdout.read()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [lab.SERVER_ADDR, "vpn-dns.lab.test"]
    queries = [q for q in lab.dns_log() if q["name"].rstrip(".") == "vpn-dns.lab.test"]
    assert queries and all(q["client"] == lab.WG_CLIENT_TUNNEL_ADDR for q in queries), queries


def test_a_vpn_jail_is_refused_when_the_system_has_no_dns_for_the_vpn(helper, lab):
    with resolved_standin(helper.bus_address, f"{vpn_index(lab) + 1000}=192.168.1.1"):
        result = appjail(helper, MEMBER, "run", "--vpn", lab.wg_ifname, "--", "true")
    assert result.returncode == 125
    assert f"the system has no DNS server for {lab.wg_ifname}" in result.stderr
    assert "--dns ADDR" in result.stderr and result.stderr.count("\n") == 1
    assert jails(helper) == []
