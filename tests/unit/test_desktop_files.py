"""desktop/: the menu entry starts the installed tray, the icon it names is there,
and the tray loads nothing privileged."""

import configparser
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DESKTOP = Path(__file__).resolve().parents[2] / "desktop"


def test_menu_entry_starts_the_tray_and_can_autostart():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(DESKTOP / "appjail-tray.desktop")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application" and section["Exec"] == "appjail-tray"
    assert section["Icon"] == "appjail" and (DESKTOP / "appjail.svg").exists()
    assert section["Terminal"] == "false"
    ET.parse(DESKTOP / "appjail.svg")  # well-formed


def test_the_tray_imports_nothing_privileged():
    code = ("import sys, appjail.desktop.tray\n"
            "print([m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'iptc') "
            "or m.startswith('appjail.helper')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[]"
