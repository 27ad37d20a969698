"""nlraw.drain: what the link and firewall watchers do with queued events (they only say "look again")."""

from __future__ import annotations

import socket

from appjail.helper.kernel import nlraw
def test_drain_reads_every_queued_message_and_returns_at_once_when_none_is_left():
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with reader, writer:
        for _ in range(3):
            writer.send(b"event")
        assert nlraw.drain(reader) is None
        assert nlraw.drain(reader) is None, "nothing queued: no wait"
        writer.send(b"later")
        assert reader.recv(16, socket.MSG_DONTWAIT) == b"later", "only what was queued went"


def test_drain_hands_back_an_error_instead_of_raising():
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    writer.close()
    reader.close()
    assert isinstance(nlraw.drain(reader), OSError)
