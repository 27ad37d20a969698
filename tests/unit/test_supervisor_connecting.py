"""Launches into a connecting (OpenVPN) jail wait in the main loop, never in a call: they start when its
tunnel comes up, or fail in one sentence when its daemon ends, the deadline passes or it is stopped."""

from __future__ import annotations

import pytest

from appjail.helper.bus.policy import Caller
from appjail.helper.bus.supervisor import Supervisor
from appjail.model import JailSpec

from .samples import OWNER, PUSHED, loop_until, ovpn_config


@pytest.fixture
def waiting(engine, openvpn):
    """A connecting jail and two launches waiting for it: (supervisor, jail, started, failed, removed)."""
    removed: list[str] = []
    supervisor = Supervisor(engine, on_added=lambda name: None, on_removed=removed.append)
    jail = engine.create(JailSpec("ov"), OWNER, openvpn=ovpn_config())
    started: list[int] = []
    failed: list[str] = []
    for i in (1, 2):
        supervisor._when_connected(jail, lambda i=i: started.append(i), lambda exc: failed.append(str(exc)))
    loop_until(lambda: False, timeout=0.05)
    assert started == [] and failed == []
    return supervisor, jail, started, failed, removed


def test_waiting_launches_start_once_the_tunnel_is_up(waiting, engine, openvpn):
    _supervisor, jail, started, failed, removed = waiting
    openvpn.up("aj-ov", PUSHED)  # on the daemon's thread, in the helper
    loop_until(lambda: started)
    assert started == [1, 2] and failed == [] and removed == []
    assert not jail.connecting and engine.list() == [jail]
    engine.destroy("ov")


def test_a_daemon_that_ends_first_fails_them_with_its_last_words_and_the_jail_goes(waiting, engine, openvpn):
    _supervisor, _jail, started, failed, removed = waiting
    openvpn.end("aj-ov", "AUTH: Received control message: AUTH_FAILED")
    loop_until(lambda: failed)
    assert failed == ["could not create jail 'ov': openvpn ended before its tunnel was up: "
                      "AUTH: Received control message: AUTH_FAILED"] * 2
    assert started == [] and removed == [(OWNER, "ov")] and engine.list() == [] and openvpn.daemons == {}


def test_a_stop_while_connecting_removes_the_jail_and_fails_the_waiting_launches(waiting, engine, openvpn):
    supervisor, _jail, started, failed, removed = waiting
    stopped: list[object] = []
    supervisor.stop(Caller(OWNER, OWNER, ()), "ov", stopped.append)
    loop_until(lambda: stopped)  # removed in a worker thread, answered once gone
    assert stopped == [None] and removed == [(OWNER, "ov")] and engine.list() == [] and openvpn.daemons == {}
    assert failed == ["jail 'ov' was stopped before its tunnel was up"] * 2 and started == []
    openvpn.connected_once.add("aj-ov")  # a late report of the stopped daemon changes nothing
    engine.on_tunnel_change((OWNER, "ov"))
    loop_until(lambda: False, timeout=0.05)


def test_the_deadline_removes_a_jail_whose_tunnel_never_comes_up(make_engine, openvpn):
    engine = make_engine(connect_timeout=0.1)
    supervisor = Supervisor(engine, on_added=lambda name: None, on_removed=lambda name: None)
    jail = engine.create(JailSpec("ov"), OWNER, openvpn=ovpn_config())
    failed: list[str] = []
    supervisor._when_connected(jail, lambda: None, lambda exc: failed.append(str(exc)))
    loop_until(lambda: failed)
    assert failed == ["could not create jail 'ov': openvpn's tunnel was not up within 0.1 s: no output"]
    assert engine.list() == [] and openvpn.daemons == {}
