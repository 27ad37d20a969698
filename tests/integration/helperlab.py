"""The test users' view of the helper: the CLI from a world-readable copy.

Test users cannot be expected to reach the checkout (it may live under
/root) or its venv: they run the system Python, with the python3-dbus
package, on a world-readable copy of the package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from appjail.lab.helper import UserCommand

REPO = Path(__file__).resolve().parents[2]
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


def user_command(bus_address: str) -> UserCommand:
    return UserCommand(bus_address, USER_PYTHON, str(USER_CODE))


def appjail_argv(*args: str) -> list[str]:
    return user_command("").argv(*args)


def user_popen_kwargs(user: str, bus_address: str) -> dict:
    return user_command(bus_address).popen_kwargs(user)


def as_user(user: str, bus_address: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `appjail ARGS` as USER; stdin is a pipe (or /dev/null), never a terminal."""
    return user_command(bus_address).run(user, *args, **kwargs)
