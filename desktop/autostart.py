"""The opt-in "Start at login": an XDG autostart entry for appjail-tray in
$XDG_CONFIG_HOME/autostart, written when ticked and removed when unticked.

It is the tray's own entry (appjail-tray.desktop) with `--background`, so a
login starts the tray in the system tray rather than opening its window
(where there is no tray the window opens anyway: nothing else would show it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .. import desktopentry as de

ENTRY = Path(__file__).with_name("appjail-tray.desktop")
BACKGROUND = "--background"


def autostart_path(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    return Path(base).expanduser() / "autostart" / ENTRY.name


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    return autostart_path(env).is_file()


def set_enabled(on: bool, env: Mapping[str, str] = os.environ) -> None:
    path = autostart_path(env)
    if not on:
        path.unlink(missing_ok=True)
        return
    keys = de.read_entry(ENTRY)
    keys["Exec"] = f"{keys['Exec']} {BACKGROUND}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(de.render(list(keys.items()), "written by appjail-tray's \"Start at login\"; "
                                                  "unticking it removes this file"))
