"""Scopes for launched programs: the call to systemd, and how its answers are taken."""

from __future__ import annotations

import re

import dbus
import dbus.lowlevel
import pytest

from appjail.helper.kernel import scopes
class FakeBus:
    """Records what Scopes asks of the bus; the test plays systemd."""

    def __init__(self, systemd_runs: bool = True) -> None:
        self.systemd_runs = systemd_runs
        self.calls: list[tuple] = []
        self.owner_watch = None
        self.job_removed = None

    def name_has_owner(self, name: str) -> bool:
        assert name == scopes.SYSTEMD_NAME
        return self.systemd_runs

    def watch_name_owner(self, name: str, callback) -> None:
        self.owner_watch = callback

    def add_signal_receiver(self, handler, signal_name, interface, bus_name, path) -> None:
        assert (signal_name, interface, bus_name, path) == (
            "JobRemoved", scopes.MANAGER_INTERFACE, scopes.SYSTEMD_NAME, scopes.SYSTEMD_PATH)
        self.job_removed = handler

    def call_async(self, *args, timeout: float) -> None:
        self.calls.append(args)


def placed(bus: FakeBus) -> tuple[scopes.Scopes, list]:
    answers: list = []
    manager = scopes.Scopes(bus)
    manager.place(1001, 4242, b"firefox", answers.append)
    return manager, answers


def test_the_scope_is_named_for_the_pid_and_never_twice_alike():
    assert scopes.scope_name(4242, "0a1b2c3d") == "appjail-4242-0a1b2c3d.scope"
    assert re.fullmatch(r"appjail-4242-[0-9a-f]{8}\.scope", scopes.scope_name(4242))
    assert scopes.scope_name(4242) != scopes.scope_name(4242)


def test_the_scopes_name_and_description_name_the_program_never_the_jail():
    # every user lists every unit (systemctl): a jail's name is its owner's business
    bus = FakeBus()
    placed(bus)
    unit, _mode, properties = bus.calls[0][5][:3]
    assert re.fullmatch(r"appjail-4242-[0-9a-f]{8}\.scope", unit)
    assert dict(properties)["Description"] == "appjail: firefox"
    assert scopes.scope_description(b"caf\xe9") == "appjail: caf\ufffd"  # D-Bus strings are UTF-8


def test_the_scope_holds_the_pid_in_the_callers_user_slice_and_is_collected_when_it_fails():
    properties = dict(scopes.scope_properties(1001, 4242, "appjail: firefox"))
    assert properties == {"PIDs": [4242], "Slice": "user-1001.slice",
                          "Description": "appjail: firefox",
                          "CollectMode": "inactive-or-failed"}
    assert properties["PIDs"].signature == "u"


def test_the_call_is_start_transient_unit_and_marshals_with_its_signature():
    bus = FakeBus()
    placed(bus)
    (call,) = bus.calls
    name, path, interface, method, signature, args = call[:6]
    assert (name, path, interface, method) == (scopes.SYSTEMD_NAME, scopes.SYSTEMD_PATH,
                                               scopes.MANAGER_INTERFACE, "StartTransientUnit")
    assert signature == scopes.START_SIGNATURE == "ssa(sv)a(sa(sv))"
    unit, mode = args[:2]
    assert re.fullmatch(r"appjail-4242-[0-9a-f]{8}\.scope", unit) and mode == "fail"
    message = dbus.lowlevel.MethodCallMessage(name, path, interface, method)
    message.append(signature=signature, *args)  # what libdbus would send: it accepts the values
    assert message.get_signature() == signature


def _reply_then_job(bus: FakeBus, result: str) -> None:
    reply = bus.calls[0][6]
    reply("/org/freedesktop/systemd1/job/7")
    bus.job_removed(7, "/org/freedesktop/systemd1/job/7", "appjail-4242-x.scope", result)


def test_the_program_may_go_on_only_once_the_job_is_done():
    bus = FakeBus()
    _manager, answers = placed(bus)
    bus.calls[0][6]("/org/freedesktop/systemd1/job/7")
    assert answers == []  # queued is not done: the pid has not moved yet
    bus.job_removed(8, "/org/freedesktop/systemd1/job/8", "other.scope", "done")
    assert answers == []
    bus.job_removed(7, "/org/freedesktop/systemd1/job/7", "appjail-4242-x.scope", "done")
    assert answers == [None]


@pytest.mark.parametrize("result", ["failed", "canceled", "dependency"])
def test_a_job_that_did_not_finish_is_one_sentence(result):
    bus = FakeBus()
    _manager, answers = placed(bus)
    _reply_then_job(bus, result)
    assert answers == [f"systemd could not start scope appjail-4242-x.scope for the program: "
                       f"job {result}"]


def test_a_refused_call_is_one_sentence_with_systemds_words():
    bus = FakeBus()
    _manager, answers = placed(bus)
    bus.calls[0][7](dbus.DBusException("Unit appjail-4242-x.scope already exists.",
                                       name="org.freedesktop.systemd1.UnitExists"))
    (answer,) = answers
    assert answer.startswith("systemd did not make scope appjail-4242-")
    assert answer.endswith("for the program: Unit appjail-4242-x.scope already exists.")


def test_systemd_leaving_the_bus_answers_whoever_waits_and_stops_the_scoping():
    bus = FakeBus()
    manager, answers = placed(bus)
    bus.calls[0][6]("/org/freedesktop/systemd1/job/7")
    assert manager.available
    bus.owner_watch("")
    assert answers == ["systemd left the bus before the program was in its scope"]
    assert not manager.available
    bus.owner_watch(":1.5")
    assert manager.available


def test_without_systemd_on_the_bus_nothing_is_scoped():
    assert not scopes.Scopes(FakeBus(systemd_runs=False)).available
