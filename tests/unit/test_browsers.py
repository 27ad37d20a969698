"""Single-instance browsers: a copy running outside the jail would take a jailed launch's work.
`run` refuses, naming the copy and saying how; a profile made from a browser's entry gets a
profile directory of its own, and its copy does not hand off. The program here behaves like
Chromium (tests/unit/fakebrowser.py)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appjail import browsers, cli, client, menuentries
from appjail.profiles import load_profiles

FAKE = Path(__file__).parent / "fakebrowser.py"
APPLICATIONS = Path(__file__).parent / "applications"
PATIENCE_S = 30  # a loaded machine starts a Python program in well under this


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home with `chromium` (the fake) first on PATH; the copies started are ended after the test."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "chromium").write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    (bin_dir / "chromium").chmod(0o755)
    for key, value in {"HOME": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}",
                       "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                       "XDG_DATA_DIRS": str(APPLICATIONS.parent)}.items():
        monkeypatch.setenv(key, value)
    started: list[subprocess.Popen] = []
    yield tmp_path, started
    for process in started:
        process.kill()
        process.wait()


def start(started: list, *argv: str) -> subprocess.Popen:
    """A copy that serves (it says `ready`); one that hands off ends instead."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    started.append(process)
    assert process.stdout.readline() == "ready\n"
    return process


def opened(directory: Path, line: str) -> bool:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        if (directory / "opened").exists() and line in (directory / "opened").read_text():
            return True
        time.sleep(0.05)
    return False


def test_run_refuses_a_browser_whose_copy_outside_would_take_the_link(home, monkeypatch, capsys):
    tmp_path, started = home
    outside = start(started, "chromium", "https://first.example")
    default = tmp_path / ".config" / "chromium"
    # the fake behaves as Chromium: a second launch hands the link over and ends
    subprocess.run(["chromium", "https://second.example"], check=True, timeout=PATIENCE_S)
    assert opened(default, f"{outside.pid} https://second.example")

    monkeypatch.setattr(client, "Client", lambda: pytest.fail("no bus call for a refused launch"))
    assert cli.main(["run", "--vpn", "wg0", "chromium", "https://third.example"]) == cli.EXIT_APPJAIL
    err = capsys.readouterr().err
    assert f"chromium already runs with profile {default} (pid {outside.pid})" in err
    assert "--user-data-dir=DIR" in err and err.count("\n") == 1


def test_a_separate_profile_or_nothing_running_is_no_reason_to_refuse(home):
    tmp_path, started = home
    assert browsers.refusal(["chromium", "x"], str(tmp_path)) is None  # nothing runs
    start(started, "chromium")
    assert browsers.refusal(["chromium", f"--user-data-dir={tmp_path / 'other'}"], str(tmp_path)) is None
    assert browsers.refusal(["/usr/bin/curl", "x"], str(tmp_path)) is None
    assert browsers.refusal(["chromium"], str(tmp_path), alive=lambda pid: False) is None  # a stale lock


def test_a_profile_made_from_a_browser_has_its_own_copy(home):
    tmp_path, started = home
    outside = start(started, "chromium")
    menuentries.add("web", "chromium", {"vpn": "wg0"}, replace=False)
    command = list(load_profiles()["web"].command)
    own = tmp_path / "data" / "appjail" / "browsers" / "web"
    assert command == ["chromium", f"--user-data-dir={own}"] and own.stat().st_mode & 0o077 == 0
    assert browsers.refusal(command, str(tmp_path)) is None
    jailed = start(started, *command, "https://jailed.example")  # a copy of its own, not a hand-off
    assert opened(own, f"{jailed.pid} https://jailed.example") and jailed.pid != outside.pid
    assert "jailed.example" not in (tmp_path / ".config" / "chromium" / "opened").read_text()
    assert any("kept its browser's profile" in line for line in menuentries.remove("web"))
    assert own.is_dir()


@pytest.mark.parametrize("target,pid", [("127.0.0.1:+4242", 4242), ("host-name-17", 17), ("none", None)])
def test_lock_targets_name_the_pid(tmp_path, target, pid):
    (tmp_path / "lock").symlink_to(target)
    assert browsers.lock_pid(str(tmp_path / "lock")) == pid
    assert browsers.lock_pid(str(tmp_path / "absent")) is None


def test_firefox_profiles_below_each_root_are_found(tmp_path):
    for root in (".mozilla/firefox/abc.default-esr", ".config/mozilla/firefox/x.default",
                 "snap/firefox/common/.mozilla/firefox/s.default"):
        (tmp_path / root).mkdir(parents=True)
        (tmp_path / root / "lock").symlink_to(f"127.0.0.1:+{os.getpid()}")
    copies = browsers.running_copies(browsers.FIREFOX, str(tmp_path), browsers.pid_alive)
    assert sorted(copies) == sorted([(str(tmp_path / ".mozilla/firefox/abc.default-esr"), os.getpid()),
                                     (str(tmp_path / ".config/mozilla/firefox/x.default"), os.getpid()),
                                     (str(tmp_path / "snap/firefox/common/.mozilla/firefox/s.default"), os.getpid())])
    assert browsers.refusal(["firefox-esr", "--new-instance", "-P", "vpn"], str(tmp_path)) is None
    assert "--profile DIR" in browsers.refusal(["/usr/lib/firefox-esr/firefox-esr"], str(tmp_path))
