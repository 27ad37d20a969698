"""Firefox ESR as it is installed: a running copy is seen by its profile's lock (so `run` refuses
a launch it would take), and the profile directory `profiles add` gives a jail's copy starts a
copy of its own beside it. Headless; no network needed, no lab."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from appjail import browsers, menuentries
from appjail.profiles import load_profiles

STARTUP_S = 120  # Firefox's first start on a loaded machine


def own_lock(directory: Path) -> int | None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if (pid := browsers.lock_pid(str(directory / "lock"))) is not None:
            return pid
        time.sleep(0.2)
    return None


def test_a_running_firefox_esr_is_seen_and_a_profiles_copy_is_its_own(tmp_path, monkeypatch):
    environment = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
                   "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_DIRS": "/usr/share",
                   "MOZ_HEADLESS": "1", "PATH": os.environ["PATH"]}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    default = tmp_path / "default-profile"
    default.mkdir()
    copies = [subprocess.Popen(["firefox-esr", "--profile", str(default), "about:blank"], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        outside = own_lock(default)
        assert outside is not None and browsers.pid_alive(outside)
        # as if it were the user's usual profile: where Firefox keeps those
        (tmp_path / ".mozilla" / "firefox").mkdir(parents=True)
        (tmp_path / ".mozilla" / "firefox" / "usual").symlink_to(default)
        refused = browsers.refusal(["/usr/lib/firefox-esr/firefox-esr", "https://example.org"], str(tmp_path))
        assert refused and f"already runs with profile {tmp_path / '.mozilla/firefox/usual'} (pid {outside})" in refused

        menuentries.add("ff", "firefox-esr", {"vpn": "wg0"}, replace=False)
        command = list(load_profiles()["ff"].command)
        assert browsers.refusal(command, str(tmp_path)) is None
        copies.append(subprocess.Popen([*command, "about:blank"], env=environment,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        jailed = own_lock(tmp_path / "data" / "appjail" / "browsers" / "ff")
        assert jailed is not None and jailed != outside and copies[0].poll() is None
    finally:
        for copy in copies:
            copy.terminate()
        for copy in copies:
            try:
                copy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                copy.kill()
                copy.wait()


pytestmark = pytest.mark.skipif(not Path("/usr/bin/firefox-esr").exists(), reason="firefox-esr not installed")
