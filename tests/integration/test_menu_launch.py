"""A menu entry of `appjail profiles add`, launched as a desktop launches it (`gio launch` with a
file), runs the program as the user, in the jail, with the file as its argument."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .helperlab import DNS, MEMBER, USER_PYTHON, user_command

PROBE = """#!/bin/sh
readlink /proc/self/ns/net
id -u
cat "$1"
"""
ENTRY = """[Desktop Entry]
Type=Application
Name=Probe
Icon=probe
Exec={probe} %f
Categories=Network;
MimeType=text/plain;
"""


def test_a_launched_menu_entry_runs_the_program_jailed_as_the_user(helper, tmp_path):
    user = pwd.getpwnam(MEMBER)
    home = Path(user.pw_dir)
    made = home / "menu-test"
    shutil.rmtree(made, ignore_errors=True)
    (made / "bin").mkdir(parents=True)
    try:
        # `appjail` on the user's PATH, as the install puts it there
        (made / "bin" / "appjail").write_text(
            f'#!/bin/sh\nexec {USER_PYTHON} -c "from appjail.cli import entry; entry()" "$@"\n')
        (made / "probe.sh").write_text(PROBE)
        for script in (made / "bin" / "appjail", made / "probe.sh"):
            script.chmod(0o755)
        (made / "probe.desktop").write_text(ENTRY.format(probe=made / "probe.sh"))
        opened = made / "a note.txt"
        opened.write_text("opened through the menu\n")
        command = user_command(helper.bus_address)
        env = {**command.env(MEMBER), "PATH": f"{made / 'bin'}:/usr/bin:/bin",
               "XDG_DATA_HOME": str(made / "data"), "XDG_CONFIG_HOME": str(made / "config")}
        os.chown(made, user.pw_uid, user.pw_gid)  # the user's own directories are made by the user

        def as_member(*argv: str) -> subprocess.CompletedProcess[str]:
            kwargs = command.popen_kwargs(MEMBER)
            return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                                  preexec_fn=kwargs["preexec_fn"], cwd=kwargs["cwd"], env=env)

        added = as_member(str(made / "bin" / "appjail"), "profiles", "add", "probe",
                          "--from", str(made / "probe.desktop"), "--dns", DNS)
        assert added.returncode == 0, added.stderr
        entry = made / "data" / "applications" / "appjail-probe.desktop"
        assert f"Exec={made / 'bin' / 'appjail'} run -p probe -- %f" in entry.read_text()

        own = as_member("readlink", "/proc/self/ns/net").stdout.strip()
        launched = as_member("gio", "launch", str(entry), str(opened))
        assert launched.returncode == 0, launched.stderr
        netns, uid, text = launched.stdout.split("\n", 2)
        assert netns.startswith("net:[") and netns != own  # the jail's network, not the user's
        assert uid == str(user.pw_uid) and text == "opened through the menu\n"
    finally:
        shutil.rmtree(made, ignore_errors=True)
