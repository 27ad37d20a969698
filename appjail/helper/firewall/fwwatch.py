"""Notice, within a second, that netfilter changed in the helper's namespace.

nftables says so itself: every committed transaction (nft, iptables-nft,
ufw and Docker through it, firewalld) is multicast to the netlink group
NFNLGRP_NFTABLES, so a socket bound to it wakes the watcher, which costs
nothing while nothing changes. Legacy x_tables sends nothing: each table in
use (/proc, so looking creates none) is read whole with IPT_SO_GET_ENTRIES
every POLL_S, counters masked, and compared with the last reading: a few
kilobytes copied twice a second, no rule decoded, and a policy change
(`iptables -P FORWARD DROP`, which changes no size) is seen too.

Only "something changed, and where" is reported: the callback looks at what
it needs (Engine.repair). Whatever changes while it looks is looked at again,
its own changes included: a tool that is still setting up (dockerd makes
DOCKER-USER after its FORWARD policy) may change more during a check that
found nothing to do yet, and taking the events then as the check's own
would miss it. A check after the callback's own changes finds everything in
place and changes nothing. If it keeps finding something to do (FIGHTS
times within FIGHT_WINDOW_S), something fights it, and the watcher backs off
(BACKOFF_S) rather than spin.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from ..kernel import nlraw
from .backends import legacy_tables

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SETTLE_S = 0.1  # a burst (iptables-restore, nft -f) is one change
POLL_S = 0.5
BACKOFF_S = 5.0
FIGHTS, FIGHT_WINDOW_S = 5, 10.0  # so many repairs that changed something, so close: something undoes them

# <linux/netfilter_ipv4/ip_tables.h>
IPT_SO_GET_INFO, IPT_SO_GET_ENTRIES = 64, 65
_INFO = struct.Struct("=32sI5I5III")  # name, valid_hooks, hook_entry, underflow, num_entries, size
_ENTRIES_HEAD = 40  # struct ipt_get_entries: name[32], size, then the 8-aligned entries
_COUNTERS = slice(96, 112)  # struct ipt_entry: ip (84), nfcache, target_offset, next_offset, comefrom, counters
_NEXT_OFFSET = struct.Struct("=H")
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

OnChange = Callable[[str], bool]  # on_change(where) -> whether it changed anything


class FirewallWatch:
    """Calls on_change(where) from its own thread after each change of netfilter.

    Bound in the caller's thread, hence in the caller's namespace; legacy
    tables are read from the watcher's thread, which starts in that
    namespace too (threads inherit it).
    """

    def __init__(self, on_change: OnChange) -> None:
        self.on_change = on_change
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        self._sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        self._raw: socket.socket | None = None
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._legacy: dict[str, bytes] = {}
        self._fights: list[float] = []  # when recent checks changed something
        self._thread = threading.Thread(target=self._run, name="appjail-fwwatch", daemon=True)

    def start(self) -> None:
        self._legacy = self._read_legacy()
        self._thread.start()

    def stop(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join()
        self._sock.close()
        if self._raw is not None:
            self._raw.close()
        os.close(self._stop_read)
        os.close(self._stop_write)

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._stop_read], [], [], POLL_S)
            if self._stop_read in ready:
                return
            where = []
            if self._sock in ready:
                time.sleep(SETTLE_S)
                self._drain()
                where.append("nftables")
            legacy = self._read_legacy()
            if legacy != self._legacy:
                where.append("x_tables " + " ".join(sorted(
                    name for name in {*legacy, *self._legacy} if legacy.get(name) != self._legacy.get(name))))
                self._legacy = legacy  # what the check looks at; a change during it shows next time
            if where:
                self._changed(", ".join(where))

    def _changed(self, where: str) -> None:
        try:
            changed = self.on_change(where)
        except Exception:
            log.exception("checking appjail's rules after a firewall change failed")
            changed = False
        now = time.monotonic()
        self._fights = [when for when in self._fights if now - when < FIGHT_WINDOW_S] + ([now] if changed else [])
        if len(self._fights) >= FIGHTS:
            log.error("appjail's rules were put back %d times in %g s: something keeps removing them; "
                      "looking again in %g s", len(self._fights), FIGHT_WINDOW_S, BACKOFF_S)
            self._fights = []
            select.select([self._stop_read], [], [], BACKOFF_S)

    def _drain(self) -> None:
        if (lost := nlraw.drain(self._sock)) is not None:  # the check reads the state anyway
            log.debug("nftables events lost: %s", lost)

    def _read_legacy(self) -> dict[str, bytes]:
        """A digest of each legacy table in use (filter, nat), counters aside."""
        found = {}
        for name in set(legacy_tables() or ()) & {"filter", "nat"}:
            if self._raw is None:
                self._raw = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_RAW)
            blob = read_table(self._raw.fileno(), name)
            if blob is not None:
                found[name] = blob
        return found


def read_table(fd: int, name: str) -> bytes | None:
    """The digest of a legacy table's rules with each entry's counters zeroed; None if it went meanwhile."""
    info = bytearray(_INFO.size)
    info[:len(name)] = name.encode()
    if _getsockopt(fd, IPT_SO_GET_INFO, info) is None:
        return None
    size = _INFO.unpack(bytes(info))[-1]
    request = bytearray(_ENTRIES_HEAD + size)
    struct.pack_into("=32sI", request, 0, name.encode(), size)
    if _getsockopt(fd, IPT_SO_GET_ENTRIES, request) is None:
        return None
    entries = request[_ENTRIES_HEAD:]
    offset = 0
    while offset + _COUNTERS.stop <= len(entries):
        entries[offset + _COUNTERS.start:offset + _COUNTERS.stop] = bytes(16)
        step = _NEXT_OFFSET.unpack_from(entries, offset + 90)[0]
        if step == 0:
            break
        offset += step
    return hashlib.blake2b(bytes(info) + bytes(entries), digest_size=16).digest()


def _getsockopt(fd: int, option: int, buffer: bytearray) -> bytearray | None:
    """getsockopt(SOL_IP) with an input buffer (Python's socket.getsockopt passes none); None on ENOENT
    (the table went) or EAGAIN (it changed between the two calls: the next poll reads it)."""
    length = ctypes.c_uint(len(buffer))
    raw = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    if _libc.getsockopt(fd, socket.IPPROTO_IP, option, raw, ctypes.byref(length)) != 0:
        return None
    return buffer
