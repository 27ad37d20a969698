import errno
import socket

import pytest

from appjail.helper.kernel import netns
from appjail.helper.kernel.hostports import (UNPRIVILEGED_PORT_START, PortInUse, hold, hold_each, privileged_ports,
                                      release)
from appjail.model import JailSpec, Publish, ValidationError, parse_publish, validate_deny


@pytest.mark.parametrize("text,expected", [
    ("6000:8080", Publish(6000, 8080, "tcp", None)),
    ("6000:8080/udp", Publish(6000, 8080, "udp", None)),
    ("192.0.2.7:80:8080/tcp", Publish(80, 8080, "tcp", "192.0.2.7")),
])
def test_publish_parses(text, expected):
    assert parse_publish(text) == expected
    assert str(expected) == (text if "/" in text else text + "/tcp")


@pytest.mark.parametrize("text", ["6000", "0:80", "6000:70000", "a:b", "6000:80/sctp", "x.y:1:2",
                                  "1:2:3:4", "6000:8080/", ":80", 6000, "6000:80\0"])
def test_bad_publish_is_refused(text):
    with pytest.raises(ValidationError):
        parse_publish(text)


def test_overlapping_publish_and_vpn_publish_are_refused():
    with pytest.raises(ValidationError, match="given twice"):
        JailSpec("web", publish=("6000:80", "192.0.2.7:6000:81"))
    JailSpec("web", publish=("6000:80", "6000:80/udp"))  # other protocol: fine
    with pytest.raises(ValidationError, match="--vpn"):
        JailSpec("web", vpn="wg0", publish=("6000:80",))


def test_deny_takes_cidrs_only():
    assert validate_deny(["192.0.2.0/24", "192.0.2.0/24"]) == ("192.0.2.0/24",)
    for bad in (["192.0.2.1/24"], ["300.0.0.0/8"], ["x"], "192.0.2.0/24"):
        with pytest.raises(ValidationError):
            validate_deny(bad)


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("proto,kind", [("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)])
def test_a_held_port_makes_a_later_bind_fail_until_released(proto, kind):
    port = _free_port(kind)
    held = hold([Publish(port, 80, proto, "127.0.0.1")])
    later = socket.socket(socket.AF_INET, kind)
    later.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what servers set
    try:
        with pytest.raises(OSError) as failed:
            later.bind(("127.0.0.1", port))
        assert failed.value.errno == errno.EADDRINUSE
        release(held)
        later.bind(("127.0.0.1", port))
    finally:
        later.close()
        release(held)


def test_a_port_in_use_is_not_held_and_nothing_is_left_bound():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy, free = taken.getsockname()[1], _free_port(socket.SOCK_STREAM)
        with pytest.raises(PortInUse, match=f"port {busy}/tcp is already in use on the host"):
            hold([Publish(free, 80, "tcp", "127.0.0.1"), Publish(busy, 80, "tcp", "127.0.0.1")])
    release(hold([Publish(free, 80, "tcp", "127.0.0.1")]))  # the first one was let go


def test_hold_each_holds_what_it_can_and_says_why_not_for_the_rest():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy, free = taken.getsockname()[1], _free_port(socket.SOCK_STREAM)
        wanted = [Publish(busy, 80, "tcp", "127.0.0.1"), Publish(free, 80, "tcp", "127.0.0.1")]
        held, lost = hold_each(wanted)
    try:
        assert [port.publish for port in held] == wanted[1:]
        assert lost == [(wanted[0], f"port {busy}/tcp is already in use on the host")]
    finally:
        release(held)


def test_loopback_connections_to_a_held_port_are_reset():
    port = _free_port(socket.SOCK_STREAM)
    (held,) = hold([Publish(port, 80, "tcp", "127.0.0.1")])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
            held.refuse()
            with pytest.raises(ConnectionResetError):
                client.recv(1)
    finally:
        held.close()


def test_ports_below_the_unprivileged_start_are_privileged(monkeypatch):
    monkeypatch.setattr(netns, "read_sysctl", lambda key: {UNPRIVILEGED_PORT_START: "1024"}[key])
    publish = [Publish(80, 8080), Publish(1023, 1, "udp"), Publish(1024, 80)]
    assert privileged_ports(publish) == publish[:2]
