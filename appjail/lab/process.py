"""Child processes of the lab: their environment, waiting until they are ready, stopping them."""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import signal
import site
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

from appjail.lab.errors import LabError

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.005

# The directory holding the `appjail` package, so `python -m appjail.lab...` children find it.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: os.environ) with this copy of appjail importable by `python -m`."""
    result = dict(os.environ if env is None else env)
    if str(PACKAGE_ROOT) in site.getsitepackages():  # installed: nothing to add
        return result
    paths = [p for p in result.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(PACKAGE_ROOT) not in paths:
        result["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *paths])
    return result


def run_checked(argv: list[str], input: str | None = None) -> str:
    """Run a command to completion and return its stdout; LabError with its stderr if it fails."""
    result = subprocess.run(argv, input=input, capture_output=True, text=True, env=child_env())
    if result.returncode != 0:
        stdin = f" (stdin: {input!r})" if input else ""
        raise LabError(f"{shlex.join(argv)}{stdin} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _failure(proc: subprocess.Popen[bytes], what: str, problem: str, errlog: Path | None) -> LabError:
    details = f"; its output: {errlog.read_text(errors='replace').strip()!r}" if errlog and errlog.exists() else ""
    return LabError(f"{what} (pid {proc.pid}) {problem}{details}")


def wait_for_output(
    proc: subprocess.Popen[bytes],
    stream: IO[bytes],
    marker: bytes,
    what: str,
    errlog: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Read `stream` (a pipe from `proc`) until `marker` shows up."""
    deadline = time.monotonic() + timeout
    seen = b""
    fd = stream.fileno()
    while marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _failure(proc, what, f"did not print {marker!r} within {timeout}s (printed {seen!r})", errlog)
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                status = proc.wait()
                raise _failure(proc, what, f"exited with status {status} before printing {marker!r} ({seen!r})", errlog)
            seen += chunk


def wait_for_path(
    proc: subprocess.Popen[bytes],
    path: Path,
    what: str,
    errlog: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Poll until `proc` has created `path`."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise _failure(proc, what, f"exited with status {proc.returncode} before creating {path}", errlog)
        if time.monotonic() > deadline:
            raise _failure(proc, what, f"did not create {path} within {timeout}s", errlog)
        time.sleep(POLL_INTERVAL)


def stop(*procs: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the children, wait for them (SIGKILL after `timeout`), close our ends of their pipes."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for proc in procs:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()


def alive(pid: int) -> bool:
    """Whether any thread of a process still runs.

    A zombie counts as dead, but its other threads may still be exiting and
    holding its files (e.g. a listening socket), so every thread is checked.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            return True
    return False


def kill_pids(pids: Iterable[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGKILL processes that need not be our children and wait until they are dead."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while survivors := [pid for pid in pids if alive(pid)]:
        if time.monotonic() > deadline:
            raise LabError(f"processes {survivors} survived SIGKILL for {timeout}s")
        time.sleep(POLL_INTERVAL)
