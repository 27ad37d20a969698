"""The helper for real: a private system bus, polkitd, test users, the lab.

`HelperProcess` starts `appjail-helper` as root inside the lab's host network
namespace (setns only), connected to the test bus; `as_user` runs the
`appjail` CLI (or any Python) as one of the test users, the way a person
would, with nothing but the bus address from the test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

from appjail.helper.jails import Engine
from appjail.helper.netns import namespace_pids
from appjail.lab import Lab, in_netns, netns_exec_argv

REPO = Path(__file__).resolve().parents[2]
# Test users cannot be expected to reach the checkout (it may live under
# /root) or its venv: they run the system Python, with the python3-dbus
# package, on a world-readable copy of the package.
USER_PYTHON = "/usr/bin/python3"
USER_CODE = Path("/var/tmp/appjail-test-code")


def stage_user_code() -> None:
    """Copy the package to USER_CODE for the test users (replacing an older copy)."""
    remove_user_code()
    USER_CODE.mkdir(mode=0o755)
    shutil.copytree(REPO / "appjail", USER_CODE / "appjail",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in USER_CODE.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def remove_user_code() -> None:
    shutil.rmtree(USER_CODE, ignore_errors=True)


class HelperProcess:
    def __init__(self, lab: Lab, bus_address: str, run_dir: Path, log_path: Path) -> None:
        self.lab = lab
        self.bus_address = bus_address
        self.run_dir = run_dir
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = netns_exec_argv(self.lab.host_ns, [
            sys.executable, "-m", "appjail.helper.main", "--bus-address", self.bus_address,
            "--run-dir", str(self.run_dir), "--debug"])
        log = open(self.log_path, "ab")
        start = log.tell()  # a restarted helper appends to the same log
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        log.close()
        deadline = time.monotonic() + 20
        while b"serving org.appjail.Helper1" not in self.log_path.read_bytes()[start:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("appjail-helper did not start:\n" + self.log_path.read_text())
            time.sleep(0.05)

    def kill(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=20)
        self.proc = None

    def stop_and_clean(self) -> None:
        """Stop the helper and remove every jail it left (they outlive it by design)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None
        with in_netns(self.lab.host_ns):
            engine = Engine(run_dir=self.run_dir)
            engine.reconcile()
            for jail in engine.list():
                for pid in namespace_pids(jail.netns):
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                engine.destroy(jail.name)
            engine.reconcile(adopt=False)


def user_env(user: str, bus_address: str) -> dict[str, str]:
    entry = pwd.getpwnam(user)
    return {"DBUS_SYSTEM_BUS_ADDRESS": bus_address, "HOME": entry.pw_dir, "USER": user,
            "LOGNAME": user, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "PYTHONPATH": str(USER_CODE), "PYTHONDONTWRITEBYTECODE": "1"}


def user_popen_kwargs(user: str, bus_address: str) -> dict:
    entry = pwd.getpwnam(user)
    return dict(user=entry.pw_uid, group=entry.pw_gid,
                extra_groups=os.getgrouplist(user, entry.pw_gid),
                env=user_env(user, bus_address), cwd=entry.pw_dir)


def appjail_argv(*args: str) -> list[str]:
    return [USER_PYTHON, "-m", "appjail.cli", *args]


def as_user(user: str, bus_address: str, *args: str, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run `appjail ARGS` as USER; stdin is a pipe (or /dev/null), never a terminal."""
    return subprocess.run(appjail_argv(*args), capture_output=True, text=True, timeout=timeout,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          **user_popen_kwargs(user, bus_address))
