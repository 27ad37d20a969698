"""Nothing slow on the helper's main loop: a WireGuard file's endpoint names are looked up together with a
deadline, jails are made and removed in worker threads, and inspect reads a bounded part of conntrack."""

from __future__ import annotations

import os
import threading
import time

import pytest

from appjail import report
from appjail.helper.tunnels import lookups
from appjail.helper.firewall import traffic
from appjail.helper.bus.policy import Caller
from appjail.helper.engine.engine import JailError, JailNotFound
from appjail.helper.bus.requests import parse_run
from appjail.helper.bus.supervisor import Supervisor
from appjail.model import JailSpec, LaunchSpec
from appjail.wgconf import parse

from .samples import WG_FILE, loop_until, wg_config

OWNER = 1000
CALLER = Caller(OWNER, OWNER, ())
PEER = WG_FILE.split("[Peer]")[1]


def peers_file(*hosts: str) -> str:
    """WG_FILE with a peer per host, each at HOST:51820."""
    interface = WG_FILE.split("[Peer]")[0]
    return interface + "".join("[Peer]" + PEER.replace("198.51.100.1", host) for host in hosts)


def address_of(host: str, _port: int) -> list[str]:
    """peerN.example -> 198.51.100.N, after a slow lookup."""
    time.sleep(0.3)
    return [f"198.51.100.{host.split('.')[0].removeprefix('peer')}"]


@pytest.fixture
def gate():
    """What a slow name or a stuck daemon waits for; opened at the end whatever happened."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def supervised(make_engine, gate):
    """A supervisor whose engine's lookups of black-hole.example wait for `gate`, and whose launches are recorded
    instead of forked: (supervisor, launched [(jail, created)], removed jail names)."""
    def resolve(host: str, port: int) -> list[str]:
        if host == "black-hole.example":
            gate.wait(lookups.TIMEOUT)
        return ["198.51.100.1"]

    removed: list[str] = []
    supervisor = Supervisor(make_engine(resolve=resolve, resolve_timeout=2.0), on_added=lambda name: None,
                            on_removed=removed.append)
    launched: list[tuple[str, bool]] = []
    supervisor._launch = lambda jail, request, caller, created, reply, fail: launched.append((jail.name, created))
    return supervisor, launched, removed


def run(supervisor: Supervisor, options: dict, failed: list[str]) -> float:
    """supervisor.run as the service calls it (the call's descriptors closed after it); the seconds it took."""
    fds = [os.open("/dev/null", os.O_RDWR) for _ in range(3)]
    started = time.monotonic()
    try:
        supervisor.run(CALLER, parse_run(options, LaunchSpec((b"true",), (), b"/")), fds, lambda *reply: None,
                       lambda exc: failed.append(str(exc)))
    finally:
        for fd in fds:
            os.close(fd)
    return time.monotonic() - started


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- endpoint names -------------------------------------------------------------------------------

def test_endpoint_names_are_looked_up_together_and_wg_gets_only_addresses(make_engine, tunnels):
    engine = make_engine(resolve=address_of)
    hosts = [f"peer{n}.example" for n in range(1, 17)]  # 16 peers: 4.8 s one after the other
    started = time.monotonic()
    engine.create(JailSpec("wg"), OWNER, wireguard=parse(peers_file(*hosts)))
    assert time.monotonic() - started < 2.0, "the 16 lookups ran at the same time"
    endpoints = [line for line in tunnels.configured["aj-wg"].splitlines() if line.startswith("Endpoint")]
    assert endpoints == [f"Endpoint = 198.51.100.{n}:51820" for n in range(1, 17)]
    engine.destroy("wg")


def test_a_name_without_an_answer_in_time_fails_the_creation_in_one_sentence_naming_it(make_engine, gate, ops):
    def resolve(host: str, port: int) -> list[str]:
        if host == "black-hole.example":
            gate.wait(lookups.TIMEOUT)
        return ["198.51.100.1"]

    engine = make_engine(resolve=resolve, resolve_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(JailError) as raised:
        engine.create(JailSpec("wg"), OWNER, wireguard=parse(peers_file("fast.example", "black-hole.example")))
    assert time.monotonic() - started < lookups.TIMEOUT / 2
    assert str(raised.value) == ("could not create jail 'wg': WireGuard Endpoint black-hole.example did not "
                                 "resolve within 0.2 s")
    assert ops == [] and engine.list() == []


def test_lookups_still_waiting_are_bounded(gate):
    names = lookups.NameLookups(lambda host, port: gate.wait(lookups.TIMEOUT) and ["198.51.100.1"], timeout=0.05,
                                max_pending=3)
    assert names.resolve_all([("a.example", 1), ("b.example", 1), ("c.example", 1)]) == {
        ("a.example", 1): None, ("b.example", 1): None, ("c.example", 1): None}
    with pytest.raises(lookups.LookupsBusy, match="^3 host name lookups are still waiting for an answer: "):
        names.resolve_all([("d.example", 1)])
    gate.set()  # the resolver answers at last: their threads end
    assert loop_until_true(lambda: names.resolve_all([("d.example", 1)]) == {("d.example", 1): ["198.51.100.1"]})


def loop_until_true(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except lookups.LookupsBusy:
            pass
        time.sleep(0.01)
    return False


def test_a_run_with_a_slow_name_returns_at_once_and_fails_later_leaving_nothing(supervised, gate):
    supervisor, launched, removed = supervised
    supervisor.engine.lookups.timeout = 0.3
    failed: list[str] = []
    loop_until(lambda: False, timeout=0.01)  # the loop's own descriptors are open
    before = open_fds()
    took = run(supervisor, {"name": "wg", "wireguard": peers_file("black-hole.example")}, failed)
    assert took < 0.1 and failed == [], "the main loop does not wait for the name"
    loop_until(lambda: failed)
    assert failed == ["could not create jail 'wg': WireGuard Endpoint black-hole.example did not resolve within 0.3 s"]
    assert supervisor.engine.list() == [] and launched == [] and removed == []
    assert open_fds() == before, "the Run's copies of its descriptors are closed"


def test_a_run_for_a_jail_being_made_waits_and_joins_it(supervised, gate):
    supervisor, launched, _removed = supervised
    failed: list[str] = []
    assert run(supervisor, {"name": "wg", "wireguard": peers_file("black-hole.example")}, failed) < 0.1
    assert run(supervisor, {"name": "wg"}, failed) < 0.1
    loop_until(lambda: False, timeout=0.1)
    assert launched == [] and supervisor.engine.list() == []
    gate.set()
    loop_until(lambda: len(launched) == 2)
    assert launched == [("wg", True), ("wg", False)] and failed == []


# -- teardown -------------------------------------------------------------------------------------

@pytest.fixture
def stuck(supervised, tunnels, gate):
    """A WireGuard jail whose daemon will not end until `gate` opens: (supervisor, launched, removed)."""
    supervisor = supervised[0]
    supervisor.engine.create(JailSpec("wgstuck"), OWNER, wireguard=wg_config())
    tunnels.stuck = gate
    return supervised


def test_a_stop_that_waits_for_a_daemon_returns_at_once_and_answers_once_it_is_gone(stuck, gate):
    supervisor, launched, removed = stuck
    stopped: list[object] = []
    started = time.monotonic()
    supervisor.stop(CALLER, "wgstuck", stopped.append)
    loop_until(lambda: False, timeout=0.2)
    assert time.monotonic() - started < 1.0 and stopped == [] and removed == []
    assert supervisor.visible_jails(CALLER) == [], "a jail on its way out is not listed"
    with pytest.raises(JailNotFound, match="^no jail named 'wgstuck'$"):
        supervisor.inspect(CALLER, "wgstuck")
    failed: list[str] = []
    run(supervisor, {"name": "wgstuck"}, failed)
    assert failed == ["jail 'wgstuck' is being stopped: try again in a moment"]
    supervisor.stop(CALLER, "wgstuck", stopped.append)  # a second Stop is answered with the first
    loop_until(lambda: False, timeout=0.1)
    assert stopped == []
    gate.set()
    loop_until(lambda: len(stopped) == 2)
    assert stopped == [None, None] and removed == [(OWNER, "wgstuck")] and launched == []


def test_a_drained_jail_is_removed_off_the_loop_its_exit_reported_after_and_a_run_waits(stuck, gate):
    supervisor, launched, removed = stuck
    reported: list[str] = []
    supervisor._drain((OWNER, "wgstuck"), lambda: reported.append("exit"))
    failed: list[str] = []
    run(supervisor, {"name": "wgstuck"}, failed)  # waits for the old one to go, then makes a new one
    loop_until(lambda: False, timeout=0.2)
    assert reported == [] and removed == [] and launched == []
    gate.set()
    loop_until(lambda: reported and launched)
    assert reported == ["exit"] and removed == [(OWNER, "wgstuck")] and failed == []
    assert launched == [("wgstuck", True)] and [jail.name for jail in supervisor.engine.list()] == ["wgstuck"]


# -- conntrack --------------------------------------------------------------------------------------

def test_a_budget_stops_a_long_read_at_its_count_or_its_time():
    counted = traffic.Budget(items=3, seconds=10)
    assert list(counted.take(range(10))) == [0, 1, 2] and counted.cut
    whole = traffic.Budget(items=3, seconds=10)
    assert list(whole.take(range(3))) == [0, 1, 2] and not whole.cut

    def slow():
        for n in range(100):
            time.sleep(0.02)
            yield n
    timed = traffic.Budget(items=1000, seconds=0.1)
    assert len(list(timed.take(slow()))) < 50 and timed.cut


def test_inspect_says_when_its_connections_are_cut_short():
    jail = {"name": "web", "owner_uid": OWNER, "netns": "aj-web", "address": "10.200.0.2", "vpn": None,
            "dns": [], "pids": [], "tunnel": None, "vpn_up": True, "blocked": [], "connections": [],
            "counters": dict.fromkeys(("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "dropped_packets",
                                       "dropped_bytes"), 0)}
    assert "connections (0)\n" in report.inspection(jail, None) + "\n"
    cut = report.inspection({**jail, "connections_cut": True}, None)
    assert "connections (0, cut short: more than inspect reads at once)" in cut


class RecordingScopes:
    """Scopes with systemd on the bus, placing at once: what was asked."""

    available = True

    def __init__(self) -> None:
        self.placed: list[tuple[int, int, bytes]] = []

    def place(self, uid: int, pid: int, program: bytes, done) -> None:
        self.placed.append((uid, pid, program))
        done(None)


def test_a_new_jails_tunnel_daemon_goes_into_a_scope_of_its_owners_slice(supervised):
    from .fakehost import DAEMON_PID

    supervisor, launched, _removed = supervised
    supervisor.scopes = RecordingScopes()
    failed: list[str] = []
    run(supervisor, {"name": "wgscoped", "wireguard": WG_FILE}, failed)
    loop_until(lambda: launched or failed)
    assert failed == [] and launched == [("wgscoped", True)]
    assert supervisor.scopes.placed == [(OWNER, DAEMON_PID, b"wireguard")]
    run(supervisor, {"name": "plain"}, failed)
    loop_until(lambda: len(launched) == 2 or failed)
    assert len(supervisor.scopes.placed) == 1, "a jail without a tunnel daemon has nothing to place"
