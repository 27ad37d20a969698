import pytest

import array
import os
import socket

from appjail.dbuswire import (METHOD_CALL, METHOD_RETURN, REPLY_SERIAL, SIGNAL, SIGNATURE, UNIX_FDS, Connection,
                              DBusError, _socket_path, encode_message, marshal, signature_of, split_signature,
                              unmarshal)


def test_signatures_split_into_complete_types():
    assert split_signature("a{sv}aayaayayah") == ["a{sv}", "aay", "aay", "ay", "ah"]
    assert split_signature("(yv)sa(ss)") == ["(yv)", "s", "a(ss)"]
    with pytest.raises(ValueError):
        split_signature("z")


@pytest.mark.parametrize("signature,values", [
    ("s", ["héllo"]),
    ("yba{sv}", [7, True, {"name": "web", "keep": True, "dns": ["192.0.2.53"], "n": -5}]),
    ("aayay", [[b"firefox", b"--new-instance"], b"/home/u"]),
    ("ii", [-3, 255]),
    ("aa{sv}", [[{"name": "a", "counters": {"rx_bytes": 2 ** 40}}, {"name": "b", "pids": [1, 2]}]]),
    ("ux", [2 ** 32 - 1, -(2 ** 62)]),
    ("a(yv)", [[(1, "/org/appjail/Helper1"), (2, "iface")]]),
])
def test_values_survive_a_round_trip(signature, values):
    body, fds = marshal(signature, values)
    assert fds == []
    assert unmarshal(signature, body) == values


def test_descriptors_go_beside_the_body_as_indexes():
    body, fds = marshal("sah", ["x", [5, 7, 5]])
    assert fds == [5, 7, 5]
    assert unmarshal("sah", body, [15, 17, 15]) == ["x", [15, 17, 15]]


def test_alignment_follows_the_specification():
    # a byte, then an int32 padded to offset 4, then a struct padded to 8
    body, _ = marshal("yi(y)", [1, 2, (3,)])
    assert body == b"\x01\0\0\0\x02\0\0\0\x03"
    # an empty array of 8-aligned structs still pads to its first element
    body, _ = marshal("ya(yy)", [1, []])
    assert body == b"\x01\0\0\0\0\0\0\0"


def test_a_method_call_header_matches_the_wire_format():
    message = encode_message(METHOD_CALL, 1, {1: "/org/freedesktop/DBus", 2: "org.freedesktop.DBus",
                                              3: "Hello", 6: "org.freedesktop.DBus"})
    assert message[:12] == b"l\x01\x00\x01" + b"\0\0\0\0" + b"\x01\0\0\0"
    assert len(message) % 8 == 0 and b"Hello\0" in message


def test_python_values_get_their_dbus_types():
    assert [signature_of(v) for v in (True, 3, "x", b"y", ["a"], {"k": 1}, [1, "a"])] == [
        "b", "x", "s", "ay", "as", "a{sv}", "av"]
    with pytest.raises(TypeError):
        signature_of(1.5j)


def test_bus_addresses():
    assert _socket_path("unix:path=/run/dbus/system_bus_socket") == "/run/dbus/system_bus_socket"
    assert _socket_path("tcp:host=x;unix:path=/tmp/a%20b,guid=1") == "/tmp/a b"
    with pytest.raises(DBusError):
        _socket_path("tcp:host=localhost,port=1")


def test_a_reply_keeps_its_descriptor_when_a_signal_arrives_in_the_same_read():
    """The bus may deliver a signal and the reply carrying a descriptor in one read: the descriptor is the
    reply's (its header says how many it carries), not the signal's."""
    client_end, bus_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    connection = Connection.__new__(Connection)
    connection.sock, connection._buffer, connection._fds, connection._serial = client_end, b"", [], 1
    signal = encode_message(SIGNAL, 7, {1: "/org/appjail/Helper1", 2: "org.appjail.Helper1", 3: "JailAdded",
                                        SIGNATURE: "s"}, marshal("s", ["web"])[0])
    body, _ = marshal("suh", ["web", 42, 0])
    reply = encode_message(METHOD_RETURN, 8, {REPLY_SERIAL: 1, SIGNATURE: "suh", UNIX_FDS: 1}, body)
    read, write = os.pipe()
    try:
        bus_end.sendmsg([signal + reply], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [read]))])
        name, number, fd = connection._reply_to(1)
        assert (name, number) == ("web", 42)
        os.write(write, b"x")
        assert os.read(fd, 1) == b"x"  # the pipe's read end, passed along
        os.close(fd)
    finally:
        for fd in (read, write):
            os.close(fd)
        client_end.close()
        bus_end.close()
