"""Published host ports: which need org.appjail.manage, and holding them while a jail lives.

The DNAT rules forward a published port; nothing in them stops a service
from binding the same port later, starting fine, and having its clients
silently reach the jail. So the helper holds every published address:port
with a socket of its own for the jail's lifetime, as docker-proxy does: a
listening TCP socket (SO_REUSEADDR, so a port left in TIME_WAIT can be held
at once, while a listener still makes every later bind fail with
EADDRINUSE) or a bound UDP socket (no SO_REUSEADDR: two UDP sockets that
both set it may share a port). Binding is also the check that the host does
not use the port already, loopback sockets included. Only loopback traffic
ever reaches a held socket (DNAT takes the rest before it): `refuse()`
turns it away.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable

from ...model import Publish
from . import netns

UNPRIVILEGED_PORT_START = "net/ipv4/ip_unprivileged_port_start"
_BACKLOG = 16
_RECV_MAX = 65535


class PortInUse(Exception):
    """A host port to publish is taken by a socket on the host."""


def privileged_ports(publish: Iterable[Publish]) -> list[Publish]:
    """The entries whose host port only root may bind in the calling thread's namespace."""
    start = int(netns.read_sysctl(UNPRIVILEGED_PORT_START))
    return [entry for entry in publish if entry.host_port < start]


class HeldPort:
    """One published address:port, bound by the helper until close()."""

    def __init__(self, publish: Publish) -> None:
        self.publish = publish
        kind = socket.SOCK_STREAM if publish.proto == "tcp" else socket.SOCK_DGRAM
        self.socket = socket.socket(socket.AF_INET, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            if publish.proto == "tcp":
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((publish.host_address or "0.0.0.0", publish.host_port))
            if publish.proto == "tcp":
                self.socket.listen(_BACKLOG)
        except OSError as exc:
            self.socket.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {publish.host_port}/{publish.proto} is already in use "
                                "on the host") from None
            raise

    def fileno(self) -> int:
        return self.socket.fileno()

    def refuse(self) -> None:
        """Turn away what loopback sent: reset a connection, discard a datagram."""
        try:
            if self.publish.proto == "udp":
                self.socket.recv(_RECV_MAX)
                return
            connection, _ = self.socket.accept()
        except OSError:  # gone meanwhile (EAGAIN, ECONNABORTED)
            return
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()

    def close(self) -> None:
        self.socket.close()


def hold(publish: Iterable[Publish]) -> list[HeldPort]:
    """Bind every entry, or none: PortInUse when the host has a socket on one of them."""
    held: list[HeldPort] = []
    try:
        for entry in publish:
            held.append(HeldPort(entry))
    except BaseException:
        release(held)
        raise
    return held


def hold_each(publish: Iterable[Publish]) -> tuple[list[HeldPort], list[tuple[Publish, str]]]:
    """Bind every entry that can be bound: the held ones, and the others with why not.

    For a jail that already exists (adopted after a restart): its DNAT rules
    forward the ports whether or not they are held, so one taken meanwhile
    does not undo the others.
    """
    held: list[HeldPort] = []
    lost: list[tuple[Publish, str]] = []
    for entry in publish:
        try:
            held.append(HeldPort(entry))
        except (PortInUse, OSError) as exc:
            lost.append((entry, str(exc)))
    return held, lost


def release(held: Iterable[HeldPort]) -> None:
    for port in held:
        port.close()
