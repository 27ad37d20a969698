"""The DNS servers the system has for a VPN interface: systemd-resolved's per-link ones, then
NetworkManager's, then resolvconf's record; without any, a sentence naming --dns."""

import json

import pytest

from appjail import linkdns
from appjail.linkdns import BusctlError, LinkDNS, NoLinkDNS

RESOLVED_LINK = "/org/freedesktop/resolve1/link/_37"
NM_DEVICE = "/org/freedesktop/NetworkManager/Devices/7"
NM_CONFIG = "/org/freedesktop/NetworkManager/IP4Config/9"


class FakeBus:
    """Answers as the services would, for those given; a BusctlError (no such service) for the rest."""

    def __init__(self, resolved=None, nm=None):
        self.calls = {}
        self.properties = {}
        if resolved is not None:
            self.calls["GetLink"] = RESOLVED_LINK
            self.properties[(RESOLVED_LINK, "DNS")] = resolved
        if nm is not None:
            self.calls["GetDeviceByIpIface"] = NM_DEVICE
            self.properties[(NM_DEVICE, "Ip4Config")] = NM_CONFIG
            self.properties[(NM_CONFIG, "NameserverData")] = [{"address": {"type": "s", "data": a}} for a in nm]

    def call(self, service, path, interface, method, signature, *args):
        if method not in self.calls:
            raise BusctlError(f"The name {service} was not provided by any .service files")
        assert args == ((7,) if method == "GetLink" else ("wg0",))
        return self.calls[method]

    def get(self, service, path, interface, name):
        return self.properties[(path, name)]


def ask(bus, dirs=(), ifindex=lambda name: 7):
    return linkdns.link_dns("wg0", bus, dirs, ifindex)


def test_resolveds_per_link_servers_come_first():
    bus = FakeBus(resolved=[[10, [0] * 16], [2, [10, 64, 0, 1]], [2, [127, 0, 0, 53]]], nm=["10.9.9.9"])
    assert ask(bus) == LinkDNS(("10.64.0.1",), "systemd-resolved")


def test_networkmanagers_servers_for_the_device_next():
    assert ask(FakeBus(resolved=[], nm=["10.8.0.1", "10.8.0.2"])) == LinkDNS(("10.8.0.1", "10.8.0.2"), "NetworkManager")
    assert ask(FakeBus(nm=["10.8.0.1"])).servers == ("10.8.0.1",)


@pytest.mark.parametrize("record", ["tun.wg0", "wg0.openvpn", "wg0"])
def test_resolvconfs_record_of_the_interface_last(tmp_path, record):
    (tmp_path / "eth0").write_text("nameserver 192.168.1.1\n")
    (tmp_path / "wg01").write_text("nameserver 10.1.1.1\n")
    (tmp_path / record).write_text("# from wg-quick\nnameserver 10.64.0.1\nnameserver ::1\n")
    assert ask(FakeBus(), [tmp_path / "none", tmp_path]) == LinkDNS(
        ("10.64.0.1",), f"resolvconf ({tmp_path / record})")


def test_without_any_the_message_names_dns(tmp_path):
    (tmp_path / "eth0").write_text("nameserver 192.168.1.1\n")
    with pytest.raises(NoLinkDNS, match="no DNS server for wg0 .* --dns ADDR"):
        ask(FakeBus(resolved=[], nm=[]), [tmp_path])

    def missing(name):
        raise OSError(19, "No such device")
    with pytest.raises(NoLinkDNS, match="wg0 does not exist now.*--dns ADDR"):
        ask(FakeBus(), ifindex=missing)


@pytest.fixture
def busctl(tmp_path, monkeypatch):
    """A busctl that prints what the test wrote to its `answer` file, and exits with `status`."""
    (tmp_path / "busctl").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat {tmp_path}/answer\n'
                                     f'exit $(cat {tmp_path}/status)\n')
    (tmp_path / "busctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")

    def answer(data, status=0):
        (tmp_path / "answer").write_text(json.dumps(data) if not isinstance(data, str) else data)
        (tmp_path / "status").write_text(str(status))
        return tmp_path
    return answer


def test_busctl_calls_and_properties_are_read_from_its_json(busctl):
    where = busctl({"type": "o", "data": [RESOLVED_LINK]})
    assert linkdns.Busctl().call(*linkdns.RESOLVED, "org.freedesktop.resolve1.Manager", "GetLink", "i", 7) \
        == RESOLVED_LINK
    argv = (where / "argv").read_text().split()
    assert argv[:3] == ["--system", "--json=short", "--timeout=2"] and argv[-3:] == ["GetLink", "i", "7"]
    busctl({"type": "a(iay)", "data": [[2, [10, 64, 0, 1]]]})
    assert linkdns.Busctl().get(*linkdns.RESOLVED, "org.freedesktop.resolve1.Link", "DNS") == [[2, [10, 64, 0, 1]]]


def test_busctl_failures_are_bus_errors(busctl, monkeypatch):
    busctl("", status=1)
    with pytest.raises(BusctlError):
        linkdns.Busctl().get("a.b", "/", "a.b", "X")
    busctl("not json")
    with pytest.raises(BusctlError):
        linkdns.Busctl().get("a.b", "/", "a.b", "X")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BusctlError):
        linkdns.Busctl().get("a.b", "/", "a.b", "X")


def test_busctl_asks_the_bus_it_is_given(busctl):
    where = busctl({"type": "s", "data": "x"})
    linkdns.Busctl("unix:path=/run/lab-bus").get("a.b", "/", "a.b", "X")
    assert (where / "argv").read_text().split()[0] == "--address=unix:path=/run/lab-bus"
