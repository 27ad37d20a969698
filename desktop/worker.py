"""Every bus call of the tray, on a thread of its own; results come back as Qt signals.

The GUI thread only emits requests (queued to this worker's thread) and
receives results, so a slow or absent helper never freezes the tray.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PyQt6.QtCore import QObject, pyqtSignal, pyqtSlot

from ..tunnelfiles import read_files
from ..client import Client, HelperError, read_exit, session_environment
from ..model import ValidationError
from ..report import reference


@dataclass(frozen=True)
class Session:
    """Where and how launched programs start: the user's environment and directory."""

    env: list[bytes] = field(default_factory=session_environment)
    cwd: bytes = field(default_factory=lambda: os.fsencode(Path.home()))
    log_dir: Path | None = None  # programs' output goes to LOG_DIR/JAIL.log, else /dev/null


def default_log_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "appjail"


class HelperWorker(QObject):
    jails_listed = pyqtSignal(dict)  # each jail by the reference the helper knows it by (report.reference)
    inspected = pyqtSignal(str, dict)
    launched = pyqtSignal(str, int)
    program_ended = pyqtSignal(str, int)  # jail name, exit status
    stopped = pyqtSignal(str)
    failed = pyqtSignal(str, str)  # what was tried, why it failed

    def __init__(self, client_factory: Callable[[], Client] = Client, session: Session | None = None) -> None:
        super().__init__()
        self._client_factory = client_factory
        self._client: Client | None = None
        self._uid: int | None = None  # as the helper knows us (WhoAmI)
        self.session = session or Session(log_dir=default_log_dir())

    def _call(self, what: str, fn: Callable[[Client], object]) -> tuple[bool, object]:
        """(succeeded, result); a failure is reported through `failed`."""
        try:
            if self._client is None:
                self._client = self._client_factory()
            return True, fn(self._client)
        except HelperError as exc:
            self.failed.emit(what, exc.message)
        return False, None

    @pyqtSlot()
    def refresh(self) -> None:
        """The jails, each by its reference: a manager sees other users' jails, maybe of the same name."""
        ok, jails = self._call("list jails", lambda c: c.list())
        if ok and self._uid is None:
            ok, who = self._call("ask who I am", lambda c: c.whoami())
            self._uid = who["uid"] if ok else None
        if ok:
            self.jails_listed.emit({reference(jail, self._uid): jail for jail in jails})

    @pyqtSlot(str)
    def inspect(self, name: str) -> None:
        ok, jail = self._call(f"inspect {name}", lambda c: c.inspect(name))
        if ok:
            self.inspected.emit(name, jail)

    @pyqtSlot(str)
    def stop(self, name: str) -> None:
        ok, _ = self._call(f"stop {name}", lambda c: c.stop(name))
        if ok:
            self.stopped.emit(name)
        self.refresh()

    @pyqtSlot(dict, list)
    def launch(self, options: dict, command: list) -> None:
        """Start COMMAND; a tunnel's file is read here, as `appjail run` reads it (off the GUI thread:
        a path may be on a filesystem that does not answer)."""
        name, what = options["name"], f"start {' '.join(command)}"
        try:
            options = read_files(options)
        except ValidationError as exc:
            self.failed.emit(what, str(exc))
            return
        with _Output(self.session.log_dir, name) as (stdin, output):
            ok, started = self._call(what, lambda c: c.run(
                options, [os.fsencode(a) for a in command], self.session.env, self.session.cwd,
                [stdin, output, output]))
        if not ok:
            return
        name, pid, exit_pipe = started
        self.launched.emit(name, pid)
        threading.Thread(target=self._wait, args=(name, exit_pipe), daemon=True).start()
        self.refresh()

    def _wait(self, name: str, exit_pipe: int) -> None:
        """Blocks until the program ends (its exit pipe is read in a thread of its own)."""
        ended = read_exit(exit_pipe)
        if ended is None:
            self.failed.emit(f"follow {name}", "appjail-helper went away before the program ended")
            return
        self.program_ended.emit(name, ended.status)


class _Output:
    """stdin from /dev/null; stdout and stderr to the jail's log file (or /dev/null)."""

    def __init__(self, log_dir: Path | None, name: str) -> None:
        self.log_dir, self.name = log_dir, name
        self.fds: list[int] = []

    def __enter__(self) -> tuple[int, int]:
        self.fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        if self.log_dir is None:
            self.fds.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
        else:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.fds.append(os.open(self.log_dir / f"{self.name}.log",
                                    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
        return self.fds[0], self.fds[1]

    def __exit__(self, *exc_info) -> None:
        for fd in self.fds:
            os.close(fd)
