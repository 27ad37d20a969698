"""A WireGuard tunnel's state from `wg show dump`: up, idle (no session, nothing to send) or down."""

from __future__ import annotations

from appjail.helper.tunnels.wireguard import DOWN, IDLE, REJECT_AFTER, UP, HandshakeWatch

NOW = 1_700_000_000.0
STALE = int(NOW - REJECT_AFTER - 60)


def test_a_recent_handshake_is_up_and_a_link_down_is_down():
    watch = HandshakeWatch()
    assert watch.state("aj-a", True, int(NOW - 30), 5000, NOW) == UP
    assert watch.state("aj-a", False, int(NOW - 30), 5000, NOW) == DOWN


def test_no_session_and_nothing_sent_since_is_idle_however_long():
    watch = HandshakeWatch()
    assert [watch.state("aj-a", True, STALE, 5000, NOW + t) for t in (0, 60, 3600)] == [IDLE] * 3


def test_sending_without_a_new_handshake_is_down_until_one_succeeds():
    watch = HandshakeWatch()
    assert watch.state("aj-a", True, STALE, 5000, NOW) == IDLE
    assert watch.state("aj-a", True, STALE, 5148, NOW + 5) == DOWN, "a handshake initiation went unanswered"
    assert watch.state("aj-a", True, STALE, 5148, NOW + 60) == DOWN
    assert watch.state("aj-a", True, int(NOW + 61), 5500, NOW + 62) == UP


def test_a_new_stale_handshake_is_looked_at_afresh():
    watch = HandshakeWatch()
    watch.state("aj-a", True, STALE, 5000, NOW)
    assert watch.state("aj-a", True, STALE + 100, 9000, NOW + 400) == IDLE


def test_never_a_handshake_is_idle_until_something_was_sent():
    watch = HandshakeWatch()
    assert watch.state("aj-a", True, 0, 0, NOW) == IDLE
    assert watch.state("aj-a", True, 0, 148, NOW + 1) == DOWN


def test_tunnels_are_watched_apart_and_forgotten():
    watch = HandshakeWatch()
    watch.state("aj-a", True, STALE, 5000, NOW)
    assert watch.state("aj-b", True, STALE, 9000, NOW) == IDLE
    watch.forget("aj-a")
    assert watch.state("aj-a", True, STALE, 9000, NOW) == IDLE, "a forgotten tunnel starts over"
