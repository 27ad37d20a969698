"""The helper's bus signals reach a jail's owner and managers, one connection at a time, never the bus."""

from __future__ import annotations

import pytest

from appjail import interface as api
from appjail.helper.bus import service
from appjail.helper.bus.audience import BUS_DAEMON, Audience

OWNER, OTHER, MANAGER = 1000, 1001, 1002


class FakeBus:
    """Records the signals sent and plays the bus daemon's NameOwnerChanged."""

    def __init__(self) -> None:
        self.sent: list = []
        self.left = None

    def add_signal_receiver(self, handler, signal_name, interface, bus_name, path, arg2) -> None:
        assert (signal_name, interface, bus_name, arg2) == ("NameOwnerChanged", BUS_DAEMON, BUS_DAEMON, "")
        self.left = lambda name: handler(name, name, "")

    def send_message(self, message) -> None:
        self.sent.append(message)


@pytest.fixture
def audience():
    """Connections: the owner's (served), another user's (served), a manager's, the owner's unserved one."""
    bus = FakeBus()
    audience = Audience(bus)
    for sender, uid in ((":1.1", OWNER), (":1.2", OTHER), (":1.3", MANAGER), (":1.4", OWNER)):
        audience.met(sender, uid)
    for sender in (":1.1", ":1.2", ":1.3"):
        audience.answered(sender, api.ACTION_INSPECT, True)
    audience.answered(":1.2", api.ACTION_MANAGE, False)
    audience.answered(":1.3", api.ACTION_MANAGE, True)
    audience.answered(":1.4", api.ACTION_RUN, False)
    return bus, audience


def test_a_signal_goes_to_the_owners_and_the_managers_connections_only(audience):
    bus, audience = audience
    audience.send(OWNER, "VpnChanged", "sb", "web", False)
    assert [m.get_destination() for m in bus.sent] == [":1.1", ":1.3"]
    for message in bus.sent:
        assert (message.get_path(), message.get_interface(), message.get_member()) == (
            api.OBJECT_PATH, api.INTERFACE, "VpnChanged")
        assert message.get_args_list() == ["web", False] and message.get_signature() == "sb"


def test_a_connection_that_left_or_lost_manage_hears_no_more(audience):
    bus, audience = audience
    bus.left(":1.1")
    audience.answered(":1.3", api.ACTION_MANAGE, False)  # polkit's last word counts
    audience.answered(":1.9", api.ACTION_MANAGE, True)   # never called: nothing to grant
    audience.send(OWNER, "JailAdded", "s", "web")
    assert bus.sent == [] and audience.recipients(OWNER) == []
    assert audience.recipients(OTHER) == [":1.2"]


def test_the_declared_signals_refuse_to_broadcast():
    # dbus-python would send them to every member of the bus
    for member in api.SIGNALS:
        declared = getattr(service.HelperService, member)
        with pytest.raises(RuntimeError, match="owner and managers only"):
            declared(object(), *(["web", True][:len(declared._dbus_signature)]))
