"""Tell the engine whenever a network interface or an IPv4 address appears, changes or goes."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Callable

from . import nlraw

log = logging.getLogger(__name__)
_RTMGRP_LINK, _RTMGRP_IPV4_IFADDR = 0x1, 0x10


class LinkWatcher:
    """Calls on_change (from its own thread) after each burst of link and address events.

    Only "something changed" is reported: the callback re-reads what it needs,
    which is simpler and cannot miss a state the way decoding events can.
    """

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        # bound now, in the caller's thread, hence in the caller's namespace
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR))
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="appjail-linkwatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        os.write(self._stop_write, b"x")
        self._thread.join()
        self._sock.close()
        os.close(self._stop_read)
        os.close(self._stop_write)

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._stop_read], [], [])
            if self._stop_read in ready:
                return
            self._drain()
            try:
                self.on_change()
            except Exception:
                log.exception("handling a link change failed")

    def _drain(self) -> None:
        if (lost := nlraw.drain(self._sock)) is not None:  # we re-read anyway
            log.warning("link events lost: %s", lost)
