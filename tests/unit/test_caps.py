"""Per-user caps: pending calls, programs starting, launches waiting for a tunnel; the descriptor limit.

A user at a cap is refused in one sentence (LimitReached) while everyone else is served.
"""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from appjail import interface as api
from appjail.helper.bus import service, supervisor as supervising
from appjail.helper.bus.policy import Caller
from appjail.helper.engine.engine import LimitReached
from appjail.helper.bus.requests import parse_run
from appjail.helper.bus.supervisor import Supervisor
from appjail.model import JailSpec, LaunchSpec

from .samples import OVPN_FILE, loop_until, ovpn_config

A, B = 1000, 1001


class FakeBus:
    """What a HelperService asks of its connection when it is made."""

    def _register_object_path(self, *args, **kwargs) -> None:
        pass

    def add_signal_receiver(self, *args, **kwargs) -> None:
        pass


class FakeMessage:
    def get_signature(self) -> str:
        return ""

    def get_allow_interactive_authorization(self) -> bool:
        return False


class Polkit:
    """Holds every check unanswered until the test answers it: polkit deciding, a password prompt."""

    def __init__(self) -> None:
        self.deciding: list = []

    def check(self, sender, action, interactive, done) -> None:
        self.deciding.append(done)


@pytest.fixture
def helper(monkeypatch):
    """(service, polkit, answers): WhoAmI calls from sender ':UID.N' are those of uid UID."""
    answers: list[tuple[str, str]] = []  # (sender, error name or "reply")
    sentences: list[str] = []

    def answers_of(_connection, message, _signature):
        def error(exc) -> None:
            answers.append((message.sender, exc.get_dbus_name()))
            sentences.append(exc.get_dbus_message())
        return (lambda *values: answers.append((message.sender, "reply"))), error

    monkeypatch.setattr(service, "_answers", answers_of)
    monkeypatch.setattr(service, "identify", lambda bus, sender: Caller(int(sender[1:].split(".")[0]), 0, (), sender))
    helper = service.HelperService(FakeBus(), supervisor=None, keeper=None)
    helper.supervisor = type("Confine", (), {"confine": staticmethod(lambda caller: caller)})()
    helper.authority = polkit = Polkit()
    return helper, polkit, answers, sentences


def call(helper_service, sender: str) -> None:
    message = FakeMessage()
    message.sender = sender
    helper_service.WhoAmI(sender=sender, message=message)


def test_a_user_at_the_pending_call_cap_is_refused_and_others_are_not(helper):
    helper_service, polkit, answers, sentences = helper
    for i in range(service.MAX_PENDING_CALLS_PER_USER):
        call(helper_service, f":{A}.{i}")
    assert len(polkit.deciding) == service.MAX_PENDING_CALLS_PER_USER and answers == []
    call(helper_service, f":{A}.99")
    assert answers == [(f":{A}.99", api.ERROR_LIMIT_REACHED)], "refused at once, polkit not asked"
    assert sentences == [f"you have {service.MAX_PENDING_CALLS_PER_USER} calls to appjail-helper in progress, "
                         "as many as one user may: wait for one of them to finish"]
    call(helper_service, f":{B}.1")
    assert len(polkit.deciding) == service.MAX_PENDING_CALLS_PER_USER + 1, "another user is served"
    polkit.deciding[0](False)  # one of A's calls is answered: its slot is free again
    assert answers[-1] == (f":{A}.0", api.ERROR_NOT_AUTHORIZED)
    call(helper_service, f":{A}.100")
    assert len(polkit.deciding) == service.MAX_PENDING_CALLS_PER_USER + 2 and len(answers) == 2


def test_a_call_answers_once_and_gives_its_slot_back_once():
    replies, released = [], []
    answered = service._Call(lambda *v: replies.append(v), lambda error: None)
    answered.answered = lambda: released.append(1)
    answered.reply("web")
    answered.fail(ValueError("late"))
    assert replies == [("web",)] and released == [1]


def test_a_user_with_as_many_programs_starting_as_allowed_is_refused_before_anything_is_made(engine):
    boss = Supervisor(engine, on_added=lambda jail: None, on_removed=lambda jail: None)
    starting = type("Starting", (), {"process": supervising.Process(0, (A, "web"), A, -1)})()
    boss._launching = {pid: starting for pid in range(supervising.MAX_STARTING_PER_USER)}
    with pytest.raises(LimitReached, match=f"^{supervising.MAX_STARTING_PER_USER} programs of yours are "
                                           "starting already, as many as one user may: try again once they have$"):
        boss.run(Caller(A, A, ()), parse_run({"name": "web"}, LaunchSpec((b"true",), (), b"/")), [0, 1, 2],
                 lambda *a: None, lambda e: None)
    assert engine.list() == []


def test_a_user_with_as_many_launches_waiting_for_tunnels_as_allowed_is_refused(engine, openvpn):
    boss = Supervisor(engine, on_added=lambda jail: None, on_removed=lambda jail: None)
    jail = engine.create(JailSpec("ov"), A, openvpn=ovpn_config())
    for _ in range(supervising.MAX_WAITING_PER_USER):
        boss._when_connected(jail, lambda: None, lambda exc: None)
    errors: list[BaseException] = []
    boss.run(Caller(A, A, ()), parse_run({"name": "ov"}, LaunchSpec((b"true",), (), b"/")), [0, 1, 2],
             lambda *a: None, errors.append)
    (error,) = errors
    assert isinstance(error, LimitReached) and str(error).startswith(
        f"{supervising.MAX_WAITING_PER_USER} programs of yours are waiting for their jails' tunnels already")
    assert len(boss._connecting[jail.id].waiters) == supervising.MAX_WAITING_PER_USER
    boss.stop(Caller(A, A, ()), "ov", lambda error: None)


def test_a_new_tunnel_jail_whose_launch_may_not_wait_goes_again(engine, openvpn):
    added, removed, errors = [], [], []
    boss = Supervisor(engine, on_added=added.append, on_removed=removed.append)
    jail = engine.create(JailSpec("ov"), A, openvpn=ovpn_config())
    for _ in range(supervising.MAX_WAITING_PER_USER):
        boss._when_connected(jail, lambda: None, lambda exc: None)
    boss.run(Caller(A, A, ()), parse_run({"name": "ov2", "openvpn": OVPN_FILE}, LaunchSpec((b"true",), (), b"/")),
             [0, 1, 2], lambda *a: None, errors.append)
    loop_until(lambda: errors and removed)  # made and removed in worker threads
    assert "waiting for their jails' tunnels already" in str(errors[0])
    assert added == removed == [(A, "ov2")] and [j.name for j in engine.list()] == ["ov"]
    boss.stop(Caller(A, A, ()), "ov", lambda error: None)


def test_the_helper_lifts_its_soft_descriptor_limit_to_the_hard_one():
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    script = ("import resource; from appjail.helper.main import raise_descriptor_limit; "
              "print(raise_descriptor_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)))
    assert result.stdout.split() == [str(hard)] * 3
