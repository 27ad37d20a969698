"""--forward-port natpmp: the NAT-PMP client's packets and its strict reading of answers, the
renewal and backoff schedule, and a forwarder's steps, on fakes (no network, no threads)."""

from __future__ import annotations

import os
import socket
import struct
import threading
from types import SimpleNamespace

import pytest

from appjail.helper.tunnels import natpmp
from appjail.helper.tunnels.natpmp import Client, Mapping, NatPmpError, forward, mapping_request, parse_mapping
from appjail.helper.engine.portforward import (BACKOFF_MAX_S, LOST, MAPPED, MAPPING, Forwarder, Forwards, PortFile,
                                                Schedule, environment)
from appjail.model import JailSpec, ValidationError, forward_gateway


def answer(opcode: int = 129, result: int = 0, internal: int = 50000, external: int = 50000,
           lifetime: int = 60, version: int = 0, epoch: int = 7) -> bytes:
    return struct.pack("!BBHIHHI", version, opcode, result, epoch, internal, external, lifetime)


def test_a_mapping_request_is_rfc_6886s_twelve_bytes():
    assert mapping_request("udp", 50000, 50001, 60) == bytes([0, 1, 0, 0, 0xC3, 0x50, 0xC3, 0x51, 0, 0, 0, 60])
    assert mapping_request("tcp", 1, 0, 0)[:2] == b"\x00\x02"
    for bad in (("icmp", 1, 1, 60), ("udp", 0, 1, 60), ("udp", 1, 65536, 60), ("udp", 1, 1, 2 ** 32)):
        with pytest.raises(ValueError):
            mapping_request(*bad)


def test_an_answer_is_read_strictly():
    assert parse_mapping(answer(), "udp", 50000) == Mapping("udp", 50000, 50000, 60, 7)
    assert parse_mapping(answer(opcode=130, external=61000), "tcp", 50000).external == 61000
    malformed = {answer()[:-1]: "15 bytes", answer() + b"\0": "17 bytes", answer(version=1): "version 1",
                 answer(opcode=130): "opcode 130", answer(opcode=1): "opcode 1",
                 answer(internal=50001): "internal port 50001"}
    for data, why in malformed.items():
        with pytest.raises(natpmp.Malformed, match=why):
            parse_mapping(data, "udp", 50000)
    with pytest.raises(NatPmpError, match="refused the udp mapping: not authorized or refused") as refused:
        parse_mapping(answer(result=2), "udp", 50000)
    assert not isinstance(refused.value, natpmp.Malformed)
    with pytest.raises(NatPmpError, match="result 99"):
        parse_mapping(answer(result=99), "udp", 50000)
    for unusable in (answer(external=0), answer(lifetime=0)):
        with pytest.raises(NatPmpError, match="no usable mapping"):
            parse_mapping(unusable, "udp", 50000)


class FakeGateway:
    """A socketpair standing in for the gateway: answers each request with what `reply(request)` gives."""

    def __init__(self, reply) -> None:
        self.reply, self.requests = reply, []

    def opener(self) -> ToGateway:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

        def serve() -> None:
            with theirs:
                while (request := _recv(theirs)) is not None:
                    self.requests.append(request)
                    for data in self.reply(request):
                        theirs.send(data)
        threading.Thread(target=serve, daemon=True).start()
        return ToGateway(ours, self)


class ToGateway:
    """The client's end: a socketpair's, connected already (connect notes the address asked)."""

    def __init__(self, sock: socket.socket, gateway: FakeGateway) -> None:
        self.sock, self.gateway = sock, gateway

    def connect(self, address: tuple[str, int]) -> None:
        self.gateway.address = address

    def __getattr__(self, name: str):
        return getattr(self.sock, name)

    def __enter__(self) -> ToGateway:
        return self

    def __exit__(self, *_exc) -> None:
        self.sock.close()


def _recv(sock: socket.socket) -> bytes | None:
    try:
        return sock.recv(64) or None
    except OSError:
        return None


def echo_mapping(request: bytes, external: int | None = None, lifetime: int = 60) -> bytes:
    _v, opcode, _r, internal, wanted, _l = struct.unpack("!BBHHHI", request)
    return answer(opcode=128 + opcode, internal=internal, external=external or wanted, lifetime=lifetime)


def client(gateway: FakeGateway, tries: int = 2) -> Client:
    return Client("10.2.0.1", gateway.opener, threading.Event(), first_wait=0.05, tries=tries)


def test_udp_then_tcp_on_the_port_the_gateway_chose():
    def provider(request: bytes) -> list[bytes]:  # ProtonVPN: its own port, whatever the wish
        return [echo_mapping(request, external=61000)]
    gateway = FakeGateway(provider)
    assert forward(client(gateway), 50000, 60) == Mapping("udp+tcp", 61000, 61000, 60, 7)
    asked = [struct.unpack("!BBHHHI", r)[1:5:2] + struct.unpack("!BBHHHI", r)[4:5] for r in gateway.requests]
    assert asked == [(1, 50000, 50000), (1, 61000, 61000), (2, 61000, 61000)]
    assert gateway.address == ("10.2.0.1", natpmp.PORT)


def test_udp_and_tcp_on_two_ports_is_no_forwarding():
    def split(request: bytes) -> list[bytes]:
        return [echo_mapping(request, external=61000 if request[1] == 1 else 62000)]
    with pytest.raises(NatPmpError, match="UDP 61000 and TCP 62000"):
        forward(client(FakeGateway(split)), 50000, 60)


def test_noise_is_skipped_and_named_when_no_answer_comes():
    gateway = FakeGateway(lambda request: [b"junk", echo_mapping(request)])
    assert client(gateway).map("udp", 50000, 50000, 60).external == 50000
    with pytest.raises(NatPmpError, match=r"no answer from the gateway 10.2.0.1 \(only an answer of 4 bytes"):
        client(FakeGateway(lambda request: [b"junk"])).map("udp", 50000, 50000, 60)
    silent = FakeGateway(lambda request: [])
    with pytest.raises(NatPmpError, match="no answer from the gateway 10.2.0.1$"):
        client(silent, tries=3).map("udp", 50000, 50000, 60)
    assert len(silent.requests) == 3, "sent again after each wait"


def test_the_schedule_renews_at_half_the_lease_backs_off_and_loses_the_port_at_its_end():
    schedule = Schedule()
    assert (schedule.state, schedule.port) == (MAPPING, 0)
    assert schedule.failed("no answer", now=0) == 1 and schedule.failed("no answer", now=1) == 2
    assert schedule.state == MAPPING
    assert schedule.succeeded(Mapping("udp+tcp", 50000, 50000, 60, 1), now=3) == 30
    assert (schedule.state, schedule.port, schedule.error, schedule.renewals) == (MAPPED, 50000, "", 0)
    assert schedule.succeeded(Mapping("udp+tcp", 50000, 50000, 60, 1), now=33) == 30
    assert schedule.renewals == 1
    # the renewal fails: tries again sooner and sooner, never past the lease's end (93)
    delays = [schedule.failed("no answer", now) for now in (63, 64, 66, 70, 78)]
    assert delays == [1, 2, 4, 8, 15] and schedule.state == MAPPED
    assert schedule.failed("no answer", now=93) == 32 and (schedule.state, schedule.port) == (LOST, 0)
    assert [schedule.failed("no answer", now=200) for _ in range(3)] == [BACKOFF_MAX_S] * 3
    assert schedule.succeeded(Mapping("udp+tcp", 50001, 50001, 60, 1), now=300) == 30
    assert (schedule.state, schedule.port, schedule.renewals) == (MAPPED, 50001, 1), "a new port is no renewal"
    assert schedule.failed("x", now=301) == 1, "backoff starts over after a success"


class FakeJail:
    def __init__(self, forwarder) -> None:
        self.forwarder = forwarder


def test_a_forwarder_writes_the_port_for_its_owner_and_removes_it_when_lost(tmp_path):
    answering = [False]
    gateway = FakeGateway(lambda request: [echo_mapping(request, lifetime=10)] if answering[0] else [])
    now = [0.0]
    port_file = PortFile(tmp_path / "forwarded", "aj-web", os.getuid())
    told = []  # (port, whether the file existed then): the firewall opens before anyone learns the port
    forwarder = Forwarder("web", lambda: "10.2.0.1", gateway.opener, port_file,
                          on_port=lambda port: told.append((port, port_file.path.exists())),
                          clock=lambda: now[0], patience=(0.01, 1))
    forwarder._wish = 50000
    assert forwarder.step() == 1 and not port_file.path.exists() and environment(FakeJail(forwarder)) == {}
    assert forwarder.status()["state"] == MAPPING and "no answer" in forwarder.status()["error"]
    answering[0] = True
    assert forwarder.step() == 5
    assert port_file.path.read_text() == "50000\n" and port_file.path.stat().st_mode & 0o777 == 0o400
    assert environment(FakeJail(forwarder)) == {b"APPJAIL_FORWARDED_PORT": b"50000",
                                                b"APPJAIL_FORWARDED_PORT_FILE": str(port_file.path).encode()}
    assert forwarder.status()["gateway"] == "10.2.0.1" and forwarder.status()["port"] == 50000
    answering[0] = False
    now[0] = 11.0  # the lease has ended, unanswered
    forwarder.step()
    assert forwarder.status()["state"] == LOST and not port_file.path.exists()
    assert told == [(50000, False), (None, False)]
    forwarder.stop()
    assert forwarder.step() == 0, "a stopped forwarder asks no more"


def test_forward_port_is_natpmp_with_an_optional_gateway_and_defaults_to_the_first_nameserver():
    assert JailSpec("web", forward_port="natpmp").forward_port == "natpmp"
    assert JailSpec("web", forward_port="natpmp:10.2.0.1").forward_port == "natpmp:10.2.0.1"
    for bad in ("upnp", "natpmp:", "natpmp:example.org", "natpmp:10.2.0.1:5351", "pcp:10.2.0.1"):
        with pytest.raises(ValidationError):
            JailSpec("web", forward_port=bad)
    assert forward_gateway("natpmp", ("10.2.0.1", "10.2.0.2")) == "10.2.0.1"
    assert forward_gateway("natpmp:10.64.0.1", ("10.2.0.1",)) == "10.64.0.1"
    assert forward_gateway("natpmp", ()) is None


def test_forwards_read_the_port_a_jail_held_and_sweep_the_files_of_jails_gone(tmp_path):
    forwards = Forwards(tmp_path / "forwarded", system=None)
    jail = SimpleNamespace(netns="aj-web", owner_uid=os.getuid())
    assert forwards.recorded(jail) is None and forwards.sweep({"aj-web"}) == []
    forwards.port_file(jail).write(50000)
    assert forwards.recorded(jail) == 50000
    (tmp_path / "forwarded/aj-gone").write_text("50001\n")
    (tmp_path / "forwarded/aj-web.tmp").write_text("x")
    assert sorted(forwards.sweep({"aj-web"})) == ["aj-gone"]
    forwards.port_file(jail).path.write_text("99999\n")
    assert forwards.recorded(jail) is None, "not a port"
