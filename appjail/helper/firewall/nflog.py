"""Blocked destinations on x_tables: the jails' NFLOG records, read on a netlink socket.

x_tables has no per-element counters, so each record rule is `-j NFLOG` to
the group of its reason (GROUP_BASE + reason code); the jail is the packet's
input interface, aj-NAME. (A prefix would say it too, but python-iptables
crashes on an NFLOG rule with both a group and a prefix.) The reader asks
for the first 64 bytes of each packet (IP header and ports). The kernel queues the records and
sends them in batches; a thread of the helper reads them and adds them up in
a `BlockedTable`. Nothing waits for the reader on the packet path: when it
falls behind, the socket's buffer overflows and records are lost (the jail's
dropped counter still counts them).

The protocol is small (nfnetlink_log: one config message to bind the group,
then packet messages with attributes), so it is read here with a raw socket
rather than a library that lacks it.

A group has one reader per network namespace, so the reader is one per
process (READER) and holds the groups only while jails exist: the last
jail's teardown unbinds them at once (on the same socket, so the next jail
binds again without waiting), and another process in the namespace — a
second engine in a test, a restarted helper — can take them.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable

from ..kernel import nlraw
from .blocked import PORT_PROTOCOLS, BlockedTable, protocol_name
from .rules import PREFIX, REASONS, reason_of

log = logging.getLogger(__name__)

GROUP_BASE = 0x6A00  # "j": group GROUP_BASE + code records the drops of reason `code`
COPY_RANGE = 64  # bytes of each packet: an IPv4 header with options, and the ports

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH = 1, 2, 4, 5
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2
NFULA_IFINDEX_INDEV, NFULA_PAYLOAD = 4, 9
BATCH_PACKETS = 64  # the kernel sends records in batches of this many ...
BATCH_WAIT_CS = 10  # ... or after this many 1/100 s
RECEIVE_BUFFER = 4 << 20


def group(code: int) -> int:
    return GROUP_BASE + code


def parse_packet(res_id: int, attributes: dict[int, bytes],
                 ifname: Callable[[int], str | None]) -> tuple[str, tuple[str, str, int, str], int] | None:
    """One NFLOG packet message (its group, attributes) -> (jail, key, IP length); None if not ours or not IPv4."""
    code = res_id - GROUP_BASE
    payload = attributes.get(NFULA_PAYLOAD, b"")
    indev = attributes.get(NFULA_IFINDEX_INDEV)
    owner = ifname(struct.unpack("!I", indev)[0]) if indev and len(indev) == 4 else None
    if not (owner and owner.startswith(PREFIX)) or not 1 <= code <= len(REASONS) or len(payload) < 20 \
            or payload[0] >> 4 != 4:
        return None
    header_length = (payload[0] & 0x0F) * 4
    total_length, protocol = struct.unpack_from("!H", payload, 2)[0], payload[9]
    dst = socket.inet_ntoa(payload[16:20])
    port = 0
    if protocol in PORT_PROTOCOLS and len(payload) >= header_length + 4:
        port = struct.unpack_from("!H", payload, header_length + 2)[0]
    return owner[len(PREFIX):], (protocol_name(protocol), dst, port, reason_of(code)), total_length


@functools.lru_cache(maxsize=256)
def interface_name(index: int) -> str | None:
    """A veth's name (remembered: a new jail's veth gets a new index)."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def _config(group_number: int, *attrs: tuple[int, bytes]) -> bytes:
    return nlraw.request((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, nlraw.NLM_F_REQUEST | nlraw.NLM_F_ACK,
                         socket.AF_UNSPEC, group_number, *(nlraw.attribute(kind, value) for kind, value in attrs))


class NflogReader:
    """Reads the reasons' groups in a daemon thread into `table`, while bound."""

    def __init__(self, table: BlockedTable) -> None:
        self.table = table
        self._sock: socket.socket | None = None
        self._bound = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Bind the groups (and start reading once); a failure is logged (and tried again
        next time), never a reason to refuse a jail: its rules drop with or without a reader."""
        with self._lock:
            if self._bound:
                return
            try:
                if self._sock is None:
                    self._sock = nlraw.open_socket()
                    self._sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)  # SO_RCVBUFFORCE
                    threading.Thread(target=self._loop, args=(self._sock,), name="nflog", daemon=True).start()
                self._configure(NFULNL_CFG_CMD_BIND)
            except OSError as exc:
                log.warning("blocked destinations are not recorded: %s", exc)
                return
            self._bound = True

    def stop(self) -> None:
        """Unbind the groups: no jail needs them, and another process may."""
        with self._lock:
            if self._bound:
                self._bound = False
                try:
                    self._configure(NFULNL_CFG_CMD_UNBIND)
                except OSError as exc:
                    log.warning("NFLOG: could not unbind: %s", exc)

    def _configure(self, command: int) -> None:
        """Bind or unbind every reason's group. The kernel's answers arrive on the
        reading thread, which ignores them; a refused bind shows as no records."""
        assert self._sock is not None
        for code in range(1, len(REASONS) + 1):
            attributes = [(NFULA_CFG_CMD, struct.pack("B", command))]
            if command == NFULNL_CFG_CMD_BIND:
                attributes += [(NFULA_CFG_MODE, struct.pack("!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0)),
                               (NFULA_CFG_QTHRESH, struct.pack("!I", BATCH_PACKETS)),
                               (NFULA_CFG_TIMEOUT, struct.pack("!I", BATCH_WAIT_CS))]
            self._sock.send(_config(group(code), *attributes))

    def _loop(self, sock: socket.socket) -> None:
        packet_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError as exc:  # ENOBUFS: the kernel dropped records while we were behind
                log.debug("NFLOG: %s", exc)
                continue
            now = int(time.time())
            for kind, start, end in nlraw.messages(data):
                if kind == nlraw.NLMSG_ERROR and (error := nlraw.error_of(data, start)):
                    log.warning("blocked destinations are not recorded: NFLOG refused a group "
                                "(%s; another process reads it?)", os.strerror(error))
                if kind != packet_type:
                    continue
                res_id = struct.unpack_from("!H", data, start + 2)[0]  # the nfgenmsg: the group
                parsed = parse_packet(res_id, nlraw.attributes(data, start + 4, end), interface_name)
                if parsed is not None:
                    jail, key, length = parsed
                    self.table.hit(jail, key, length, now)


READER = NflogReader(BlockedTable())
