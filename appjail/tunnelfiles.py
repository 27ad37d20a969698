"""A tunnel's file on the client's side: read as the user, checked, and sent as text.

The CLI and the tray read a `--wireguard` or `--openvpn` file here, as the
user who names it, and only if it is theirs and nobody else may write it
(the helper never opens a user's path). Each kind is checked here already,
with the helper's own parser, so a bad file fails before any bus call; the
helper checks the text again. The parsers are imported only when a file is
given (the CLI's start stays short).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from . import model
from .model import ValidationError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the CLI's start)
if TYPE_CHECKING:
    from .ovpnconf import OpenVpnConfig
    from .wgconf import WireGuardConfig

MAX_FILE = 64 * 1024
FILE_OPTIONS = {option.key: option for option in model.OPTIONS if option.file}
Read = Callable[[str, str], str]  # read(path, what): a file the first names, read as the user


def read_files(options: dict) -> dict:
    """`options` with each file option's path replaced by the file's text, read and checked here."""
    return {key: read_file_option(option, value) if (option := FILE_OPTIONS.get(key)) else value
            for key, value in options.items()}


def read_file_option(option: model.Option, path: str, private: bool = False) -> str:
    """A file option's text, with what the file names read as the user too, checked as the helper will
    (private: by the helper, of a declared jail: files that nobody but their owner may read)."""
    def read(name: str, flag: str) -> str:
        return read_own_file(name, flag, private)

    return _PREPARE[option.key](read(path, option.flags[-1]), path, read)


def _wireguard(text: str, path: str, read: Read) -> str:
    from .wgconf import parse

    parse(text)
    return text


def _openvpn(text: str, path: str, read: Read) -> str:
    """The .ovpn text with the file its auth-user-pass line names put inline (read as the user too)."""
    from .ovpnconf import prepare

    return prepare(text, path, read)


def parse(key: str, text: str) -> WireGuardConfig | OpenVpnConfig:
    """A tunnel file option's text (as sent, or as a declared jail's file holds it) parsed into its config."""
    from . import ovpnconf, wgconf

    return {"wireguard": wgconf.parse, "openvpn": ovpnconf.parse}[key](text)


_PREPARE: dict[str, Callable[[str, str, Read], str]] = {"wireguard": _wireguard, "openvpn": _openvpn}


def read_own_file(path: str, flag: str, private: bool = False) -> str:
    """A file the helper gets as text: read here, as the user, and only if it is the user's own
    and nobody else may write it (wg-quick warns about the same); private: nor read it."""
    path = os.path.expanduser(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ValidationError(f"{flag} {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValidationError(f"{flag} {path}: not a regular file")
    with os.fdopen(fd, "rb") as file:
        if st.st_uid != os.getuid():
            raise ValidationError(f"{flag} {path}: not your file (owner uid {st.st_uid})")
        if st.st_mode & 0o022:
            raise ValidationError(f"{flag} {path}: others may write it (mode {stat.S_IMODE(st.st_mode):o}); "
                                  f"chmod go-w it")
        if private and st.st_mode & 0o044:
            raise ValidationError(f"{flag} {path}: others may read it (mode {stat.S_IMODE(st.st_mode):o}); "
                                  f"chmod go-rw it")
        data = file.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise ValidationError(f"{flag} {path}: longer than {MAX_FILE} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValidationError(f"{flag} {path}: not text") from None
