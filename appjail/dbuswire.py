"""Just enough of the D-Bus wire protocol for appjail's clients, in the standard library.

The CLI starts for every `appjail run`; dbus-python (and the logging, xml and
threading machinery it imports) doubled its start-up time. A client only needs
to authenticate (EXTERNAL, with descriptor passing), call methods and read
their replies, so this module does that and nothing else: no signals, no
objects of its own, no main loop. The helper keeps dbus-python.

Marshalling follows the specification's little-endian format for the basic
types, arrays, structs, dict entries and variants; descriptors (`h`) travel
as SCM_RIGHTS ancillary data with the message.
"""

from __future__ import annotations

import array
import os
import struct

# _socket, not socket: the wrapper module pulls in enum, a few milliseconds
# of every CLI start for nothing this module uses
import _socket as socket

SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"
BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
FLAG_ALLOW_INTERACTIVE_AUTHORIZATION = 0x4
# header field codes and their signatures
PATH, INTERFACE, MEMBER, ERROR_NAME, REPLY_SERIAL, DESTINATION, SENDER, SIGNATURE, UNIX_FDS = \
    1, 2, 3, 4, 5, 6, 7, 8, 9
_FIELD_SIGNATURES = {PATH: "o", INTERFACE: "s", MEMBER: "s", ERROR_NAME: "s", REPLY_SERIAL: "u",
                     DESTINATION: "s", SENDER: "s", SIGNATURE: "g", UNIX_FDS: "u"}

_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "d": "d",
          "h": "I"}
_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "h": 4,
          "s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1}
_MAX_MESSAGE = 128 * 1024 * 1024


class DBusError(Exception):
    """An error reply, or a failure of the connection itself (named like libdbus does)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class UnixFd(int):
    """A descriptor to send with a message (an `h` value)."""


# -- signatures ----------------------------------------------------------

def split_signature(signature: str) -> list[str]:
    """The complete types of a signature: "a{sv}ayh" -> ["a{sv}", "ay", "h"]."""
    types, position = [], 0
    while position < len(signature):
        end = _type_end(signature, position)
        types.append(signature[position:end])
        position = end
    return types


def _type_end(signature: str, start: int) -> int:
    code = signature[start]
    if code == "a":
        return _type_end(signature, start + 1)
    if code in "({":
        closing = ")" if code == "(" else "}"
        position = start + 1
        while signature[position] != closing:
            position = _type_end(signature, position)
        return position + 1
    if code in _ALIGN:
        return start + 1
    raise ValueError(f"unsupported type {code!r} in signature {signature!r}")


def signature_of(value: object) -> str:
    """A D-Bus type for a Python value (for variants): bool, int, str, bytes, lists, dicts."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "x"
    if isinstance(value, str):
        return "s"
    if isinstance(value, bytes):
        return "ay"
    if isinstance(value, (list, tuple)):
        kinds = {signature_of(v) for v in value}
        return "a" + (kinds.pop() if len(kinds) == 1 else "v")
    if isinstance(value, dict):
        return "a{sv}"
    raise TypeError(f"cannot send a {type(value).__name__} over D-Bus")


# -- marshalling ---------------------------------------------------------

class _Typed:
    """A variant's value with its D-Bus type given, not guessed (header fields)."""

    def __init__(self, signature: str, value: object) -> None:
        self.signature, self.value = signature, value


class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()
        self.fds: list[int] = []

    def align(self, boundary: int) -> None:
        self.data += b"\0" * (-len(self.data) % boundary)

    def write(self, signature: str, value: object) -> None:
        code = signature[0]
        self.align(_ALIGN[code])
        if code == "h":
            self.fds.append(int(value))
            self.data += struct.pack("<I", len(self.fds) - 1)
        elif code == "b":
            self.data += struct.pack("<I", 1 if value else 0)
        elif code in _FIXED:
            self.data += struct.pack("<" + _FIXED[code], value)
        elif code in "so":
            encoded = value.encode()
            self.data += struct.pack("<I", len(encoded)) + encoded + b"\0"
        elif code == "g":
            encoded = value.encode()
            self.data += struct.pack("<B", len(encoded)) + encoded + b"\0"
        elif code == "v":
            inner, value = (value.signature, value.value) if isinstance(value, _Typed) \
                else (signature_of(value), value)
            self.write("g", inner)
            self.write(inner, value)
        elif code == "a":
            self._write_array(signature[1:], value)
        elif code == "(":
            for item_type, item in zip(split_signature(signature[1:-1]), value, strict=True):
                self.write(item_type, item)
        else:
            raise ValueError(f"cannot marshal type {signature!r}")

    def _write_array(self, element: str, value) -> None:
        length_at = len(self.data)
        self.data += b"\0\0\0\0"
        self.align(_ALIGN[element[0]])
        start = len(self.data)
        if element == "y":
            self.data += bytes(value)
        elif element[0] == "{":
            key_type, value_type = split_signature(element[1:-1])
            for key, item in value.items():
                self.align(8)
                self.write(key_type, key)
                self.write(value_type, item)
        else:
            for item in value:
                self.write(element, item)
        self.data[length_at:length_at + 4] = struct.pack("<I", len(self.data) - start)


class _Reader:
    """Reads values from `data` at `position`; alignment counts from the message's start."""

    def __init__(self, data: bytes, fds: list[int], position: int = 0) -> None:
        self.data, self.fds, self.position = data, fds, position

    def align(self, boundary: int) -> None:
        self.position += -self.position % boundary

    def _take(self, size: int) -> bytes:
        chunk = self.data[self.position:self.position + size]
        if len(chunk) != size:
            raise DBusError("org.freedesktop.DBus.Error.InvalidArgs", "truncated message")
        self.position += size
        return chunk

    def read(self, signature: str):
        code = signature[0]
        self.align(_ALIGN[code])
        if code == "h":
            return self.fds[struct.unpack("<I", self._take(4))[0]]
        if code == "b":
            return struct.unpack("<I", self._take(4))[0] != 0
        if code in _FIXED:
            fmt = "<" + _FIXED[code]
            return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]
        if code in "so":
            length = struct.unpack("<I", self._take(4))[0]
            text = self._take(length + 1)[:-1]
            return text.decode()
        if code == "g":
            length = self._take(1)[0]
            return self._take(length + 1)[:-1].decode()
        if code == "v":
            return self.read(self.read("g"))
        if code == "a":
            return self._read_array(signature[1:])
        if code == "(":
            return tuple(self.read(t) for t in split_signature(signature[1:-1]))
        raise ValueError(f"cannot unmarshal type {signature!r}")

    def _read_array(self, element: str):
        length = struct.unpack("<I", self._take(4))[0]
        self.align(_ALIGN[element[0]])
        end = self.position + length
        if element == "y":
            return self._take(length)
        if element[0] == "{":
            key_type, value_type = split_signature(element[1:-1])
            result = {}
            while self.position < end:
                self.align(8)
                key = self.read(key_type)
                result[key] = self.read(value_type)
            return result
        items = []
        while self.position < end:
            items.append(self.read(element))
        return items


def marshal(signature: str, values: tuple | list) -> tuple[bytes, list[int]]:
    """(body, descriptors) of `values` as `signature`."""
    writer = _Writer()
    for item_type, value in zip(split_signature(signature), values, strict=True):
        writer.write(item_type, value)
    return bytes(writer.data), writer.fds


def unmarshal(signature: str, data: bytes, fds: list[int] | None = None) -> list:
    reader = _Reader(data, fds or [])
    return [reader.read(t) for t in split_signature(signature)]


def encode_message(kind: int, serial: int, fields: dict[int, object], body: bytes = b"",
                   flags: int = 0) -> bytes:
    header = _Writer()
    header.data += struct.pack("<cBBBII", b"l", kind, flags, 1, len(body), serial)
    header.write("a(yv)", [(code, _Typed(_FIELD_SIGNATURES[code], value))
                           for code, value in sorted(fields.items())])
    header.align(8)
    return bytes(header.data) + body


# -- the connection ------------------------------------------------------

class Connection:
    """One authenticated connection to a bus; method calls block until their reply."""

    def __init__(self, address: str | None = None, timeout: float = 10.0) -> None:
        address = address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self._buffer = b""
        self._fds: list[int] = []
        self._serial = 0
        try:
            self.sock.connect(_socket_path(address))
            self._authenticate()
            self.unique_name = self.call(BUS_NAME, BUS_PATH, BUS_NAME, "Hello")[0]
        except OSError as exc:
            self.sock.close()
            raise DBusError("org.freedesktop.DBus.Error.NoServer",
                            f"cannot connect to the bus at {address}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self.sock.close()

    def _authenticate(self) -> None:
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        if not self._auth_line().startswith(b"OK "):
            raise DBusError("org.freedesktop.DBus.Error.AuthFailed", "the bus refused authentication")
        self.sock.sendall(b"NEGOTIATE_UNIX_FD\r\n")
        if self._auth_line() != b"AGREE_UNIX_FD":
            raise DBusError("org.freedesktop.DBus.Error.NotSupported", "the bus cannot pass descriptors")
        self.sock.sendall(b"BEGIN\r\n")

    def _auth_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise DBusError("org.freedesktop.DBus.Error.NoReply", "the bus closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def call(self, destination: str, path: str, interface: str, member: str, signature: str = "",
             args: tuple | list = (), timeout: float | None = 10.0, interactive: bool = False) -> list:
        """Call a method and return its reply's values; DBusError for an error reply."""
        body, fds = marshal(signature, args)
        self._serial += 1
        fields: dict[int, object] = {PATH: path, INTERFACE: interface, MEMBER: member,
                                     DESTINATION: destination}
        if signature:
            fields[SIGNATURE] = signature
        if fds:
            fields[UNIX_FDS] = len(fds)
        message = encode_message(METHOD_CALL, self._serial, fields, body,
                                 FLAG_ALLOW_INTERACTIVE_AUTHORIZATION if interactive else 0)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.settimeout(timeout)
        try:
            self.sock.sendmsg([message], ancillary)
            return self._reply_to(self._serial)
        except TimeoutError:
            raise DBusError("org.freedesktop.DBus.Error.NoReply",
                            f"no reply to {member} within {timeout} s") from None

    def _reply_to(self, serial: int) -> list:
        while True:
            kind, fields, body, fds = self._receive()
            if fields.get(REPLY_SERIAL) != serial or kind not in (METHOD_RETURN, ERROR):
                for fd in fds:  # not ours to keep (a signal, another reply)
                    os.close(fd)
                continue
            values = unmarshal(fields.get(SIGNATURE, ""), body, fds)
            if kind == ERROR:
                for fd in fds:
                    os.close(fd)
                text = values[0] if values and isinstance(values[0], str) else ""
                raise DBusError(fields.get(ERROR_NAME, "org.freedesktop.DBus.Error.Failed"), text)
            return values

    def _receive(self) -> tuple[int, dict, bytes, list[int]]:
        fixed = self._read_exactly(16)
        if fixed[:1] != b"l":
            raise DBusError("org.freedesktop.DBus.Error.NotSupported", "big-endian message")
        kind = fixed[1]
        (body_length,) = struct.unpack("<I", fixed[4:8])
        (fields_length,) = struct.unpack("<I", fixed[12:16])
        header_length = 16 + fields_length + (-(16 + fields_length) % 8)
        if header_length + body_length > _MAX_MESSAGE:
            raise DBusError("org.freedesktop.DBus.Error.LimitsExceeded", "message too large")
        header = fixed + self._read_exactly(header_length - 16)
        body = self._read_exactly(body_length)
        fields = dict(_Reader(header, [], position=12).read("a(yv)"))
        # a message's descriptors are the next ones received, as many as it says: one read may
        # hold a signal and then the reply whose descriptor came with it
        count = fields.get(UNIX_FDS, 0)
        fds, self._fds = self._fds[:count], self._fds[count:]
        return kind, fields, body, fds

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(64 * 4),
                                                     socket.MSG_CMSG_CLOEXEC)
            for level, kind, payload in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                    fds = array.array("i")
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                    self._fds.extend(fds)
            if not data:
                raise DBusError("org.freedesktop.DBus.Error.NoReply", "the bus closed the connection")
            self._buffer += data
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk


def _socket_path(address: str) -> str:
    """The socket of the first unix:path= entry of a bus address."""
    for entry in address.split(";"):
        transport, _, options = entry.partition(":")
        values = dict(option.split("=", 1) for option in options.split(",") if "=" in option)
        if transport == "unix" and "path" in values:
            return _unescape(values["path"])
    raise DBusError("org.freedesktop.DBus.Error.BadAddress", f"unsupported bus address {address!r}")


def _unescape(text: str) -> str:
    parts = text.split("%")
    return parts[0] + "".join(chr(int(p[:2], 16)) + p[2:] for p in parts[1:])
