"""A real terminal for a jailed program: a pty relayed to the user's terminal.

The program gets the pty's slave end as stdin/stdout/stderr (the launcher
makes it the controlling terminal of the program's new session), so job
control, Ctrl-C and full-screen programs work. Here the user's terminal is put
in raw mode and bytes are copied both ways; window size changes follow.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import tty

_CHUNK = 65536


class PtyRelay:
    def __init__(self, stdin: int = 0, stdout: int = 1) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.master, self.slave = os.openpty()
        os.set_inheritable(self.master, False)
        self._saved: list | None = None
        self._previous_winch = None
        self._copy_window_size()

    def __enter__(self) -> PtyRelay:
        self._saved = termios.tcgetattr(self.stdin)
        tty.setraw(self.stdin, termios.TCSANOW)
        self._previous_winch = signal.signal(signal.SIGWINCH, lambda *_: self._copy_window_size())
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGWINCH, self._previous_winch or signal.SIG_DFL)
        if self._saved is not None:
            termios.tcsetattr(self.stdin, termios.TCSADRAIN, self._saved)
        os.close(self.master)
        self.close_slave()

    def close_slave(self) -> None:
        """Once the program holds the slave, ours would keep the pty open forever."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def _copy_window_size(self) -> None:
        try:
            size = fcntl.ioctl(self.stdin, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def relay(self, done_fd: int) -> None:
        """Copy both ways until the program's side closes, or done_fd is readable."""
        reading_stdin = True
        while True:
            watched = [self.master, done_fd] + ([self.stdin] if reading_stdin else [])
            try:
                ready, _, _ = select.select(watched, [], [])
            except InterruptedError:
                continue
            if self.master in ready and not self._pump_output():
                return
            if self.stdin in ready:
                data = os.read(self.stdin, _CHUNK)
                if data:
                    _write_all(self.master, data)
                else:
                    reading_stdin = False
            if done_fd in ready:
                self._drain_output()
                return

    def _pump_output(self) -> bool:
        try:
            data = os.read(self.master, _CHUNK)
        except OSError as exc:
            if exc.errno == errno.EIO:  # every slave descriptor is closed
                return False
            raise
        if not data:
            return False
        _write_all(self.stdout, data)
        return True

    def _drain_output(self) -> None:
        while select.select([self.master], [], [], 0.05)[0] and self._pump_output():
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
