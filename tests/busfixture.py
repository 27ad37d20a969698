"""Root-side fixtures for talking to the helper: a private system bus with the
project's bus policy and a real polkitd with the project's actions and rules,
and test users. Everything installed is removed again; files that were
already there (an installed appjail) are left as they were.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

from appjail.lab.bus import PrivateSystemBus
from appjail.lab.bus import polkit_files_installed as checkout_polkit_files

REPO = Path(__file__).resolve().parents[1]
POLKIT_DIR = REPO / "polkit"
BUS_POLICY = POLKIT_DIR / "org.appjail.Helper1.conf"
# root may stand in for systemd-resolved and firewalld there (tests/integration/*_standin.py)
STANDIN_POLICY = REPO / "tests" / "integration" / "standins.conf"
GROUP = "appjail"
# name -> member of GROUP
USERS = {"ajt-a": True, "ajt-b": True, "ajt-out": False}
HOME_ROOT = Path("/var/tmp/appjail-test-homes")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def polkit_files_installed():
    return checkout_polkit_files(POLKIT_DIR)


class SystemBus:
    """`with SystemBus() as bus:` the bus at `bus.address`, polkitd knowing appjail."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self.address = ""

    def __enter__(self) -> SystemBus:
        with ExitStack() as stack:
            stack.enter_context(polkit_files_installed())
            bus = stack.enter_context(PrivateSystemBus(extra_policies=[BUS_POLICY, STANDIN_POLICY]))
            self.address = bus.address
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()


class TestUsers:
    """`with TestUsers() as users:` the users of USERS exist; group GROUP too."""

    __test__ = False  # not a test class

    def __enter__(self) -> TestUsers:
        self._created_group = False
        try:
            grp.getgrnam(GROUP)
        except KeyError:
            _run("groupadd", "--system", GROUP)
            self._created_group = True
        HOME_ROOT.mkdir(mode=0o755, exist_ok=True)
        for name, member in USERS.items():
            self._remove_user(name)  # left over from an interrupted run
            extra = ["--groups", GROUP] if member else []
            _run("useradd", "--create-home", "--home-dir", str(HOME_ROOT / name),
                 "--shell", "/bin/sh", "--user-group", *extra, name)
        return self

    def __exit__(self, *exc_info) -> None:
        for name in USERS:
            self._remove_user(name)
        shutil.rmtree(HOME_ROOT, ignore_errors=True)
        if self._created_group:
            _run("groupdel", GROUP)

    @staticmethod
    def _remove_user(name: str) -> None:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return
        _run("userdel", "--remove", "--force", name)

    @staticmethod
    def uid(name: str) -> int:
        return pwd.getpwnam(name).pw_uid

    @staticmethod
    def gids(name: str) -> list[int]:
        entry = pwd.getpwnam(name)
        return os.getgrouplist(name, entry.pw_gid)
