"""'Always run in a jail…': the installed applications with icons and a search field, and a pick making
the profile and menu entry `appjail profiles add NAME --from APP` makes; 'Start at login'."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PyQt6.QtCore import Qt

from appjail import cli, menuentries
from appjail import desktopentry as de
from appjail.desktop import autostart
from appjail.desktop.app_picker import AppPicker
from appjail.profiles import load_profiles

from .test_tunnels import tray_with  # noqa: F401

APPLICATIONS = Path(__file__).parents[1] / "unit" / "applications"


@pytest.fixture
def desktop(tmp_path, monkeypatch):
    """The fixtures' entries as the system's, Flatpak's app only in the system's Flatpak exports."""
    system = tmp_path / "system"
    shutil.copytree(APPLICATIONS, system / "applications")
    exports = tmp_path / "flatpak" / "exports" / "share"
    (exports / "applications").mkdir(parents=True)
    shutil.move(system / "applications" / "org.example.Flat.desktop", exports / "applications")
    monkeypatch.setattr(de, "FLATPAK_SYSTEM_EXPORTS", exports)
    (tmp_path / "icons").mkdir()
    values = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
              "XDG_DATA_DIRS": str(system), "HOME": str(tmp_path)}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def test_the_picker_lists_the_installed_applications_flatpaks_too_with_icons_and_searches(qtbot, desktop):
    picker = AppPicker(["wg0"])
    qtbot.addWidget(picker)
    assert picker.listed() == ["Chromium", "Firefox ESR", "Flat", "Konsole", "Viewer"]
    assert all(not picker.apps.item(row).icon().isNull() for row in range(picker.apps.count()))
    qtbot.keyClicks(picker.search, "fire")
    assert picker.listed() == ["Firefox ESR"]
    assert picker.apps.currentItem().text() == "Firefox ESR", "the first match is picked"
    picker.search.setText("org.example")
    assert picker.listed() == ["Flat"]
    picker.search.clear()
    assert len(picker.listed()) == 5


def test_picking_makes_the_profile_and_entry_profiles_add_makes(qtbot, desktop, tmp_path):
    picker = AppPicker(["wg0", "eth0"])
    qtbot.addWidget(picker)
    picker.pick("firefox-esr.desktop")
    assert picker.name.placeholderText() == "firefox-esr"
    picker.way_out.vpn.setCurrentText("wg0")
    picker.way_out.dns.setText("10.64.0.1")
    picker.replace.setChecked(True)
    picker.accept()
    assert picker.result() == 1, picker.error.text()
    assert picker.told[-1].startswith("Firefox ESR now always runs jailed (VPN wg0)")
    made = Path(desktop["XDG_DATA_HOME"]) / "applications" / "firefox-esr.desktop"
    picked = (made.read_text(), load_profiles()["firefox-esr"])
    menuentries.remove("firefox-esr")
    assert not made.exists()
    assert cli.main(["profiles", "add", "firefox-esr", "--from", "firefox-esr", "--vpn", "wg0",
                     "--dns", "10.64.0.1", "--replace"]) == 0
    assert (made.read_text(), load_profiles()["firefox-esr"]) == picked, "the same as the command line's"


def test_appjails_own_entries_are_not_offered_and_a_refusal_is_shown(qtbot, desktop):
    menuentries.add("ff", "firefox-esr", {"vpn": "wg0"}, replace=True)
    picker = AppPicker([])
    qtbot.addWidget(picker)
    assert picker.listed().count("Firefox ESR") == 1
    item = next(picker.apps.item(r) for r in range(picker.apps.count()) if picker.apps.item(r).text() == "Firefox ESR")
    assert item.data(Qt.ItemDataRole.UserRole).path.parent.parent.name == "system", "the system's, not the shadow"
    own = Path(desktop["XDG_DATA_HOME"]) / "applications" / "viewer.desktop"
    own.write_text((APPLICATIONS / "viewer.desktop").read_text())
    picker.pick("chromium.desktop")
    picker.name.setText("bad name!")
    picker.accept()
    assert picker.result() == 0 and "bad name!" in picker.error.text()
    picker.pick("viewer.desktop")
    picker.name.setText("view")
    picker.replace.setChecked(True)
    picker.accept()
    assert picker.result() == 0 and picker.error.text() == f"{own} is your own entry, not appjail's; move it away first"
    assert "view" not in load_profiles()


def test_the_trays_picker_adds_a_profile_to_the_menu(tray_with, qtbot, desktop):
    tray, _client = tray_with({}, [])
    tray.profiles_loader = load_profiles
    picker = tray.app_picker()
    qtbot.addWidget(picker)
    picker.pick("chromium.desktop")
    picker.accept()
    assert tray.notifications[-1][0] == "Profile made" and "menu entry:" in tray.notifications[-1][1]
    assert tray.profile_action("chromium").text() == "Start chromium"
    assert tray.window.profiles.item(0, 0).text() == "chromium"


def test_start_at_login_writes_an_autostart_entry_and_unticking_removes_it(tray_with, desktop):
    tray, _client = tray_with({}, [])
    action = tray.actions["autostart"]
    assert action in tray.menu.actions() and not action.isChecked()
    path = Path(desktop["XDG_CONFIG_HOME"]) / "autostart" / "appjail-tray.desktop"
    action.trigger()
    keys = de.read_entry(path)
    assert keys["Exec"] == "appjail-tray --background" and keys["Name"] == "appjail"
    assert autostart.enabled()
    if shutil.which("desktop-file-validate"):  # hints (the shipped entry's categories) are not errors
        result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
    action.trigger()
    assert not path.exists() and not autostart.enabled()


def test_the_picker_stays_open_from_the_menu_while_the_window_is_hidden(tray_with, qtbot, desktop):
    import gc

    tray, _client = tray_with({}, [])
    tray.window.hide()  # as in the system tray: the picker has no parent to hold it
    tray.actions["pick"].trigger()
    gc.collect()
    qtbot.addWidget(tray.picker)
    assert tray.picker.isVisible() and "Firefox ESR" in tray.picker.listed()
