"""Netfilter netlink spoken directly: messages, attributes, one request or dump.

For the two small conversations no library here has: NFLOG records (nflog)
and the elements of a blocked set (firewall/nft.py reads them in a few
milliseconds; libnftables' listing of 1000 elements takes 20 ms).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
HEADER = struct.Struct("=IHHII")


def messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, start of its payload, its end) of each netlink message in a datagram."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < HEADER.size:
            break
        yield kind, offset + HEADER.size, offset + length
        offset += (length + 3) & ~3


def attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """Netlink attributes (4-byte aligned, type flags masked) of data[offset:end]."""
    found = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def nested(value: bytes) -> dict[int, bytes]:
    return attributes(value, 0, len(value))


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def request(kind: int, flags: int, family: int, res_id: int, *attrs: bytes) -> bytes:
    """A netfilter netlink message: header, nfgenmsg, attributes."""
    body = struct.pack("!BBH", family, 0, res_id) + b"".join(attrs)
    return HEADER.pack(HEADER.size + len(body), kind, flags, 1, 0) + body


def error_of(data: bytes, start: int) -> int:
    """The errno of an NLMSG_ERROR (0: an acknowledgement)."""
    return -struct.unpack_from("=i", data, start)[0]


def open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    sock.bind((0, 0))
    return sock


def dump(message: bytes) -> Iterator[tuple[int, bytes, int, int]]:
    """Send a dump request; (type, datagram, start, end) of each answer until done.

    An error answer raises OSError (ENOENT for an object that does not exist).
    """
    with open_socket() as sock:
        sock.send(message)
        while True:
            data = sock.recv(1 << 20)
            for kind, start, end in messages(data):
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    error = error_of(data, start)
                    if error:
                        raise OSError(error, "netfilter netlink request refused")
                    return
                yield kind, data, start, end


def drain(sock: socket.socket) -> OSError | None:
    """Read and drop every event queued on a netlink socket: an event only says "look again".
    The error when some were lost (ENOBUFS): the caller looks again all the same."""
    while True:
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            return exc
