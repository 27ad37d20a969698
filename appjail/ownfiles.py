"""Files whose text goes to the helper, read only when their owner alone may change them.

The CLI and the tray read a user's tunnel files as the user (the helper
never opens a user's path); the helper reads the files of declared jails
(helper/engine/declared.py) as root, with private=True for the ones that
hold keys: readable by root only.
"""

from __future__ import annotations

import os
import stat

from .model import Option, ValidationError

MAX_FILE = 64 * 1024


def read_file_option(option: Option, path: str, private: bool = False) -> str:
    """A file option's text, with what the file names read the same way (option.file says how)."""
    def read(name: str, flag: str) -> str:
        return read_own_file(name, flag, private)

    text = read(path, option.flags[-1])
    return option.file(text, path, read) if callable(option.file) else text


def read_own_file(path: str, flag: str, private: bool = False) -> str:
    """A file's text, only if it is the caller's own and nobody else may write it (wg-quick warns about
    the same); private: nobody else may read it either."""
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
        mode = stat.S_IMODE(st.st_mode)
        if st.st_mode & 0o022:
            raise ValidationError(f"{flag} {path}: others may write it (mode {mode:o}); chmod go-w it")
        if private and st.st_mode & 0o044:
            raise ValidationError(f"{flag} {path}: others may read it (mode {mode:o}); chmod go-rw it")
        data = file.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise ValidationError(f"{flag} {path}: longer than {MAX_FILE} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValidationError(f"{flag} {path}: not text") from None


