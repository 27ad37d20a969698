"""The Supervisor's run, launch, join, drain and stop on the in-memory machine and a fake launcher.

The launcher's children are real processes that never exec (the main loop
reaps them), so the Supervisor's own bookkeeping runs as in the helper:
a Run makes the caller's jail or joins it, the program starts at its gate,
its exit is reported once a jail it left empty is gone.
"""

from __future__ import annotations

import os
import signal

import pytest

from appjail import interface as api
from appjail.helper.bus.policy import Caller
from appjail.helper.bus.requests import parse_run
from appjail.helper.bus.supervisor import Supervisor
from appjail.helper.engine.engine import Conflict
from appjail.helper.kernel.launch import LaunchError
from appjail.model import LaunchSpec

from .samples import DNS, OWNER, loop_until

CALLER = Caller(OWNER, OWNER, ())
PROGRAM = LaunchSpec((b"curl", b"http://192.0.2.80/"), (), b"/")


class Call:
    """One Run as the service makes it: its reply or its failure, and the program's exit."""

    def __init__(self, supervisor: Supervisor, options: dict) -> None:
        self.replied: tuple[str, int] | None = None
        self.exit_pipe: int | None = None
        self.failed: BaseException | None = None
        fds = [os.open("/dev/null", os.O_RDWR) for _ in range(3)]
        try:
            supervisor.run(CALLER, parse_run({"dns": list(DNS), **options}, PROGRAM), fds, self._reply, self._fail)
        finally:
            for fd in fds:
                os.close(fd)

    def _reply(self, name: str, pid: int, exit_read: int) -> None:
        self.replied, self.exit_pipe = (name, pid), exit_read

    def _fail(self, error: BaseException) -> None:
        self.failed = error

    @property
    def answered(self) -> bool:
        return self.replied is not None or self.failed is not None

    def exit(self) -> str:
        """The exit line the client reads, once the helper's main loop has written it."""
        assert self.exit_pipe is not None
        os.set_blocking(self.exit_pipe, False)
        read: list[bytes] = []

        def ended() -> bool:
            try:
                read.append(os.read(self.exit_pipe, 64))
            except BlockingIOError:
                return False
            return read[-1] == b""
        loop_until(ended, timeout=5.0)
        os.close(self.exit_pipe)
        return b"".join(read).decode()


@pytest.fixture
def supervisor(engine):
    removed: list = []
    made = Supervisor(engine, on_added=lambda jail: None, on_removed=removed.append)
    made.removed = removed
    return made


def test_a_run_makes_the_jail_starts_the_program_and_the_jail_goes_with_it(supervisor, engine, launcher, kernel):
    call = Call(supervisor, {"name": "web"})
    loop_until(lambda: call.answered)
    assert call.failed is None and call.replied is not None
    name, pid = call.replied
    assert name == "web" and launcher.started == [(pid, list(PROGRAM.argv))]
    assert call.exit() == "0 0\n", "it ends with 0 (launcher.exit_code)"
    assert engine.list() == [] and supervisor.removed == [(OWNER, "web")], "gone before the exit is told"


def test_a_second_run_joins_the_jail_and_it_stays_until_both_have_ended(supervisor, engine, launcher, kernel):
    launcher.exit_code = None  # they run until signalled
    first = Call(supervisor, {"name": "web"})
    loop_until(lambda: first.answered)
    second = Call(supervisor, {"name": "web"})
    loop_until(lambda: second.answered)
    assert first.replied and second.replied and first.replied[1] != second.replied[1]
    assert len(engine.list()) == 1 and [op for op in launcher.ops if op.startswith("create_namespace")] == [
        "create_namespace aj-web"], "joined, not made again"
    os.kill(first.replied[1], signal.SIGTERM)
    assert first.exit() == f"0 {signal.SIGTERM}\n"
    loop_until(lambda: False, timeout=0.1)
    assert [jail.name for jail in engine.list()] == ["web"], "the other program still runs in it"
    os.kill(second.replied[1], signal.SIGTERM)
    assert second.exit() == f"0 {signal.SIGTERM}\n"
    loop_until(lambda: supervisor.removed, timeout=5.0)  # the drain that the first exit began looks again
    assert supervisor.removed == [(OWNER, "web")] and engine.list() == []


def test_a_run_that_disagrees_with_the_jail_is_a_conflict(supervisor, launcher):
    launcher.exit_code = None
    first = Call(supervisor, {"name": "web"})
    loop_until(lambda: first.answered)
    other = Call(supervisor, {"name": "web", "no_lan": True})
    loop_until(lambda: other.answered)
    assert isinstance(other.failed, Conflict) and "leave those options out to join it" in str(other.failed)
    os.kill(first.replied[1], signal.SIGKILL)
    first.exit()


def test_a_program_that_does_not_start_fails_the_run_and_its_new_jail_goes_first(supervisor, engine, launcher):
    launcher.report, launcher.exit_code = b"127 curl: command not found", 127
    call = Call(supervisor, {"name": "web"})
    loop_until(lambda: call.answered)
    assert isinstance(call.failed, LaunchError) and call.failed.exit_code == api.EXIT_NOT_FOUND
    assert str(call.failed) == "curl: command not found"
    assert engine.list() == [] and supervisor.removed == [(OWNER, "web")], "gone before the answer"


def test_a_kept_jail_stays_after_its_last_program(supervisor, engine, kernel):
    call = Call(supervisor, {"name": "web", "keep": True})
    loop_until(lambda: call.answered)
    assert call.exit() == "0 0\n"
    loop_until(lambda: False, timeout=0.1)
    assert [jail.name for jail in engine.list()] == ["web"] and supervisor.removed == []


def test_stop_ends_the_programs_then_removes_the_jail(supervisor, engine, launcher, ops):
    launcher.exit_code = None
    call = Call(supervisor, {"name": "web"})
    loop_until(lambda: call.answered)
    stopped: list = []
    supervisor.stop(CALLER, "web", stopped.append)
    loop_until(lambda: stopped)
    assert stopped == [None] and engine.list() == [] and f"signal_namespace aj-web {signal.SIGTERM}" in ops
    assert call.exit() == f"0 {signal.SIGTERM}\n"
