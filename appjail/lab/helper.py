"""appjail-helper inside a lab, and the appjail CLI as a user, for the tests and the demo.

`LabHelper` runs `appjail-helper` as root inside the lab's host network
namespace (setns only), connected to a given bus, with a state directory of
its own; optionally inside other namespaces too (`enter_argv`: the lab's
systemd's, see systemd.py). `UserCommand` runs the `appjail` CLI as an unprivileged user, the
way a person would, knowing nothing but the bus address, on the same host as the helper: in
its network namespace (appjail refuses programs in any other but its jails').
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appjail.lab.errors import LabError
from appjail.lab.netns import enter_netns, in_netns, netns_exec_argv
from appjail.lab.process import PACKAGE_ROOT, READY_TIMEOUT, child_env, kill_pids

READY_MARKER = b"serving org.appjail.Helper1"


class LabHelper:
    def __init__(self, host_ns: str, bus_address: str, run_dir: Path, log_path: Path,
                 enter_argv: Callable[[list[str]], list[str]] | None = None) -> None:
        self.host_ns = host_ns
        self.bus_address = bus_address
        self.run_dir = run_dir
        self.log_path = log_path
        self.enter_argv = enter_argv  # None: the helper stays in the tests' other namespaces
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *options: str, timeout: float = 2 * READY_TIMEOUT) -> None:
        """Start the helper (with extra command-line `options`) and wait until it serves."""
        argv = netns_exec_argv(self.host_ns, [
            sys.executable, "-m", "appjail.helper.main", "--bus-address", self.bus_address,
            "--run-dir", str(self.run_dir), "--debug", *options])
        if self.enter_argv is not None:
            argv = self.enter_argv(argv)
        with open(self.log_path, "ab") as log:
            start = log.tell()  # a restarted helper appends to the same log
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         env=child_env())
        deadline = time.monotonic() + timeout
        while READY_MARKER not in self.log_path.read_bytes()[start:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError("appjail-helper did not start:\n" + self.log_path.read_text())
            time.sleep(0.05)

    def kill(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)
        self.proc.wait(timeout=20)
        self.proc = None

    def stop_and_clean(self) -> None:
        """Stop the helper and remove every jail it left (they outlive it by design)."""
        from appjail.helper.engine.engine import Engine
        from appjail.helper.kernel.netns import namespace_pids

        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None
        with in_netns(self.host_ns):
            engine = Engine(run_dir=self.run_dir)
            engine.reconcile()
            for jail in engine.list():
                kill_pids(namespace_pids(jail.netns))
                engine.destroy(jail.name, jail.owner_uid)
            engine.reconcile(adopt=False)


@dataclass(frozen=True)
class UserCommand:
    """How to run `appjail` as a user: which Python, where the package is, and in which network namespace."""

    bus_address: str
    python: str = sys.executable
    pythonpath: str | None = None  # None: the package is installed for `python`
    # the helper's network namespace: appjail answers no program elsewhere but in its jails
    netns: str | None = None

    def env(self, user: str) -> dict[str, str]:
        entry = pwd.getpwnam(user)
        env = {"DBUS_SYSTEM_BUS_ADDRESS": self.bus_address, "HOME": entry.pw_dir, "USER": user,
               "LOGNAME": user, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1"}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        return env

    def popen_kwargs(self, user: str) -> dict[str, Any]:
        entry = pwd.getpwnam(user)
        groups = os.getgrouplist(user, entry.pw_gid)
        netns = self.netns

        def become_user() -> None:
            """In the child: the helper's namespace first (entering it needs root), then the user."""
            if netns is not None:
                enter_netns(netns)
            os.setgroups(groups)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        return dict(preexec_fn=become_user, env=self.env(user), cwd=entry.pw_dir)

    def argv(self, *args: str) -> list[str]:
        """What the installed `appjail` command runs (without `-m`, whose runpy costs 4 ms)."""
        return [self.python, "-c", "from appjail.cli import entry; entry()", *args]

    def run(self, user: str, *args: str, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`appjail ARGS` as USER; stdin is a pipe (or /dev/null), never a terminal."""
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              **self.popen_kwargs(user))


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@contextmanager
def temporary_user(name: str, group: str) -> Iterator[str]:
    """A system user NAME in GROUP, with a home of its own, for as long as the block runs."""
    home = Path(tempfile.mkdtemp(prefix=f"{name}-home-"))
    subprocess.run(["userdel", name], capture_output=True)  # left by an interrupted run
    try:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(home),
                        "--shell", "/usr/sbin/nologin", "--groups", group, name],
                       check=True, capture_output=True)
        shutil.chown(home, name, name)
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def stage_package(target: Path) -> None:
    """A world-readable copy of the appjail package under TARGET (replacing an older one).

    For unprivileged users of a checkout they cannot read (one under /root):
    they run /usr/bin/python3 (with Debian's python3-dbus) with PYTHONPATH=TARGET.
    """
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(mode=0o755, parents=True)
    shutil.copytree(PACKAGE_ROOT / "appjail", target / "appjail",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # the tray, installed as appjail.desktop (pyproject's package-dir)
    shutil.copytree(PACKAGE_ROOT / "desktop", target / "appjail" / "desktop",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # byte-compiled for the system Python, as an installation would be: its
    # users cannot write the cache themselves
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(target)], check=True)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
