"""The README's first set-up command, as written: `sudo ./scripts/install`.

It installs for real (that is what it is for) and ends with `appjail-demo`.
Afterwards the test puts the machine back as it found it: an appjail that
was not installed before is uninstalled, a group, system bus or polkitd the
install created or started is removed or stopped.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from appjail.lab.helper import group_exists
from appjail.lab.process import alive

REPO = Path(__file__).resolve().parents[2]
PREFIX = Path("/opt/appjail")
BUS_PIDFILE = Path("/run/dbus/pid")
POLKITD_PIDFILE = Path("/run/appjail-polkitd.pid")
INSTALLED = [
    Path("/usr/share/polkit-1/actions/org.appjail.policy"),
    Path("/etc/polkit-1/rules.d/50-appjail.rules"),
    Path("/usr/share/dbus-1/system.d/org.appjail.Helper1.conf"),
    Path("/usr/share/dbus-1/system-services/org.appjail.Helper1.service"),
    Path("/etc/systemd/system/appjail-helper.service"),
    Path("/usr/share/applications/appjail-tray.desktop"),
    Path("/usr/share/icons/hicolor/scalable/apps/appjail.svg"),
]


def _system_bus_answers() -> bool:
    return subprocess.run(
        ["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
         "/org/freedesktop/DBus", "org.freedesktop.DBus.GetId"], capture_output=True).returncode == 0


def _stop_started(pidfile: Path) -> None:
    if pidfile.exists():
        pid = int(pidfile.read_text())
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
        pidfile.unlink(missing_ok=True)


@pytest.fixture
def machine_put_back():
    was_installed = (PREFIX / "venv/bin/appjail").exists()
    had_group = group_exists("appjail")
    had_bus = _system_bus_answers()
    had_polkitd_pidfile = POLKITD_PIDFILE.exists()
    yield
    if not was_installed:
        subprocess.run([REPO / "scripts/install", "--uninstall"], check=True, capture_output=True)
    if not had_polkitd_pidfile:
        _stop_started(POLKITD_PIDFILE)
    if not had_bus:
        _stop_started(BUS_PIDFILE)
    if not had_group:
        subprocess.run(["groupdel", "appjail"], check=True)


def test_install_as_written_installs_root_owned_code_and_ends_with_the_demo(machine_put_back):
    env = {k: v for k, v in os.environ.items() if k not in ("SUDO_USER", "VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run([REPO / "scripts/install"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    for path in [PREFIX, PREFIX / "venv", PREFIX / "venv/bin/appjail-helper", *INSTALLED]:
        info = path.stat()
        assert info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
    package = subprocess.run([PREFIX / "venv/bin/python", "-c", "import appjail; print(appjail.__file__)"],
                             cwd="/", capture_output=True, text=True, check=True).stdout.strip()
    assert package.startswith(str(PREFIX)), "the helper's code is a copy, not this checkout"
    for command in ("appjail", "appjail-tray", "appjail-demo"):
        assert os.path.realpath(f"/usr/local/bin/{command}") == str(PREFIX / "venv/bin" / command)
    assert group_exists("appjail") and _system_bus_answers()
    command = (PREFIX / "venv/bin/appjail").read_text()
    assert "import re" not in command and "entry()" in command, "pip's script costs 3 ms a run"

    assert "the web server saw: client=203.0.113.2" in result.stdout
    assert "the kill switch held" in result.stdout
    assert "demo finished" in result.stdout
