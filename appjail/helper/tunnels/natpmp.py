"""A NAT-PMP client (RFC 6886): a port of the VPN's gateway forwarded to the jail, standard library only.

The helper asks from inside the jail's network namespace (the socket is
made there), so the request leaves through the jail's own way out: its
tunnel, or the --vpn interface. Answers are read strictly: from the gateway
only (a connected socket), exactly the answer's size, version 0, the
opcode asked + 128, the internal port asked; anything else is ignored as
noise and named if no proper answer comes. Requests are sent again after
250 ms, doubling (RFC 6886 3.1), a few times only: the caller's schedule
(portforward) retries later with backoff.

A forwarded port is asked as providers such as ProtonVPN document it: UDP
first, then TCP for the port UDP got, each mapping the same external and
internal port, so the program listens on the port the world connects to.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Callable
from typing import NamedTuple

PORT = 5351  # the gateway's NAT-PMP port
VERSION = 0
OP_ADDRESS, OP_UDP, OP_TCP = 0, 1, 2
OPCODES = {"udp": OP_UDP, "tcp": OP_TCP}
RESULTS = {1: "unsupported version", 2: "not authorized or refused", 3: "network failure",
           4: "out of resources", 5: "unsupported opcode"}
_MAPPING_REQUEST = struct.Struct("!BBHHHI")  # version, opcode, reserved, internal, external, lifetime
_MAPPING_ANSWER = struct.Struct("!BBHIHHI")  # version, opcode, result, epoch, internal, external, lifetime
FIRST_WAIT_S = 0.25
TRIES = 4  # 0.25 + 0.5 + 1 + 2 s


class NatPmpError(Exception):
    """The gateway refused, gave something unusable, or did not answer; the message says which."""


class Malformed(NatPmpError):
    """A datagram that is no answer to the request."""


class Mapping(NamedTuple):
    proto: str
    internal: int
    external: int
    lifetime: int  # seconds the gateway grants
    epoch: int  # seconds since the gateway's mappings were last lost


def mapping_request(proto: str, internal: int, external: int, lifetime: int) -> bytes:
    """A request to map (or, with lifetime 0, remove) a port; ports 1-65535, lifetime 0..2**32-1."""
    if proto not in OPCODES or not 1 <= internal <= 65535 or not 0 <= external <= 65535 \
            or not 0 <= lifetime < 2 ** 32:
        raise ValueError(f"invalid NAT-PMP request {proto} {internal} {external} {lifetime}")
    return _MAPPING_REQUEST.pack(VERSION, OPCODES[proto], 0, internal, external, lifetime)


def parse_mapping(data: bytes, proto: str, internal: int) -> Mapping:
    """The gateway's answer to mapping_request(proto, internal, ...), or Malformed / NatPmpError."""
    if len(data) != _MAPPING_ANSWER.size:
        raise Malformed(f"an answer of {len(data)} bytes, not {_MAPPING_ANSWER.size}")
    version, opcode, result, epoch, got_internal, external, lifetime = _MAPPING_ANSWER.unpack(data)
    if version != VERSION or opcode != 128 + OPCODES[proto]:
        raise Malformed(f"an answer of version {version}, opcode {opcode}")
    if result:
        raise NatPmpError(f"the gateway refused the {proto} mapping: {RESULTS.get(result, f'result {result}')}")
    if got_internal != internal:
        raise Malformed(f"an answer for internal port {got_internal}, not {internal}")
    if not external or not lifetime:
        raise NatPmpError(f"the gateway mapped {proto} port {external} for {lifetime} s: no usable mapping")
    return Mapping(proto, internal, external, lifetime, epoch)


Opener = Callable[[], socket.socket]  # a UDP socket where the requests must leave from (the jail)


class Client:
    """Requests to one gateway, each on a fresh socket from `opener` (made in the jail's namespace).

    `stop` ends a request between two waits (at most FIRST_WAIT_S * 2**(TRIES-1) apart).
    """

    def __init__(self, gateway: str, opener: Opener, stop: threading.Event,
                 first_wait: float = FIRST_WAIT_S, tries: int = TRIES) -> None:
        self.gateway, self.opener, self.stop = gateway, opener, stop
        self.first_wait, self.tries = first_wait, tries

    def map(self, proto: str, internal: int, external: int, lifetime: int) -> Mapping:
        request = mapping_request(proto, internal, external, lifetime)
        noise: Malformed | None = None
        with self.opener() as sock:
            sock.connect((self.gateway, PORT))  # only the gateway's datagrams reach it
            wait = self.first_wait
            for _ in range(self.tries):
                if self.stop.is_set():
                    raise NatPmpError("stopped")
                try:
                    sock.send(request)
                except OSError as exc:  # no route: the tunnel is down
                    raise NatPmpError(f"cannot reach the gateway {self.gateway}: {exc.strerror}") from None
                while select.select([sock], [], [], wait)[0]:
                    try:
                        return parse_mapping(sock.recv(64), proto, internal)
                    except Malformed as exc:
                        noise = exc
                    except ConnectionRefusedError:
                        raise NatPmpError(f"the gateway {self.gateway} has no NAT-PMP server "
                                          "(port unreachable)") from None
                wait *= 2
        raise NatPmpError(f"no answer from the gateway {self.gateway}" + (f" (only {noise})" if noise else ""))


def forward(client: Client, port: int, lifetime: int) -> Mapping:
    """UDP and TCP mapped on one port, external = internal; `port` is a wish (the gateway may pick another).

    The gateway's choice for UDP is asked again as such, then for TCP; both
    must agree, else the forwarding failed.
    """
    udp = client.map("udp", port, port, lifetime)
    if udp.external != port:
        port = udp.external
        udp = client.map("udp", port, port, lifetime)
    tcp = client.map("tcp", port, port, lifetime)
    if udp.external != port or tcp.external != port:
        raise NatPmpError(f"the gateway forwards UDP {udp.external} and TCP {tcp.external}, not one port")
    return Mapping("udp+tcp", port, port, min(udp.lifetime, tcp.lifetime), tcp.epoch)
