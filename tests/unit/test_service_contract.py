import os

import dbus
import pytest

from appjail import interface as api
from appjail.helper.bus import service
from appjail.helper.engine.engine import JailNotFound
from appjail.helper.kernel.launch import LaunchError
from appjail.helper.engine.engine import Conflict, LimitReached
from appjail.helper.bus.policy import NotAllowed
from appjail.model import ValidationError


def test_every_exported_method_has_an_action_and_every_action_a_method():
    table = service.HelperService._dbus_class_table["appjail.helper.bus.service.HelperService"][api.INTERFACE]
    methods = {name for name, fn in table.items() if getattr(fn, "_dbus_is_method", False)}
    signals = {name for name, fn in table.items() if getattr(fn, "_dbus_is_signal", False)}
    assert methods == set(api.METHOD_ACTIONS)
    assert signals == set(api.SIGNALS)


def test_a_method_without_an_action_cannot_be_declared():
    with pytest.raises(RuntimeError, match="no polkit action"):
        @service.exported("", "", ())
        def Reboot(self, caller, reply):  # noqa: N802 - D-Bus naming
            pass


@pytest.mark.parametrize("exc,name", [
    (ValidationError("bad"), api.ERROR_INVALID_ARGUMENT),
    (NotAllowed("no"), api.ERROR_NOT_AUTHORIZED),
    (JailNotFound("gone"), api.ERROR_NOT_FOUND),
    (Conflict("differs"), api.ERROR_CONFLICT),
    (LimitReached("too many"), api.ERROR_LIMIT_REACHED),
    (LaunchError("no such program", 127), api.ERROR_PROGRAM_NOT_FOUND),
    (LaunchError("not executable", 126), api.ERROR_NOT_EXECUTABLE),
    (LaunchError("mount failed", 125), api.ERROR_FAILED),
    (KeyError("secret internals"), api.ERROR_FAILED),
])
def test_errors_map_to_names_with_one_sentence(exc, name):
    error = service.as_dbus_error(exc)
    assert error.get_dbus_name() == name
    assert "\n" not in error.get_dbus_message() and "Traceback" not in error.get_dbus_message()
    assert "secret internals" not in error.get_dbus_message()


def test_values_from_the_bus_become_plain_python():
    value = dbus.Dictionary({"name": dbus.String("web"), "keep": dbus.Boolean(True),
                             "dns": dbus.Array([dbus.String("192.0.2.53")])}, signature="sv")
    assert service.to_python(value) == {"name": "web", "keep": True, "dns": ["192.0.2.53"]}
    assert type(service.to_python(dbus.Boolean(False))) is bool
    assert service.to_python(dbus.ByteArray(b"/tmp")) == b"/tmp"


def test_a_call_answers_once_and_then_holds_nothing():
    replies, errors = [], []
    call = service._Call(lambda *v: replies.append(v), errors.append)
    call.reply("web", 7)
    call.reply("again")
    call.fail(ValueError("late"))
    assert replies == [("web", 7)] and errors == []
    assert call._reply is None and call._error is None


def test_a_failing_later_callback_becomes_the_calls_error():
    errors = []
    call = service._Call(lambda *v: None, errors.append)

    def broken(ok):
        raise ValidationError("bad value")

    call.later(broken)(True)
    assert [e.get_dbus_name() for e in errors] == [api.ERROR_INVALID_ARGUMENT]


def test_a_descriptor_outside_the_descriptor_array_is_refused_untaken():
    read_end, write_end = os.pipe()
    os.close(write_end)
    fd = dbus.types.UnixFd(read_end)
    os.close(read_end)  # UnixFd holds its own copy
    with pytest.raises(ValidationError, match="descriptor array"):
        service.to_python(dbus.Dictionary({"dns": fd}, signature="sv"))
    open_before = len(os.listdir("/proc/self/fd"))
    service._discard([fd])
    assert len(os.listdir("/proc/self/fd")) == open_before - 1
    with pytest.raises(ValueError, match="already taken"):
        fd.take()
