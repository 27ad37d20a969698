"""Tunnel jails in the tray (pytest-qt, offscreen, a stand-in client): the run dialog's file chooser,
the menu's entries for profiles and jails with tunnels, the file read at launch, the inspector."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PyQt6.QtWidgets import QFileDialog

from appjail import model
from appjail.desktop.inspector import InspectorWindow
from appjail.desktop.run_dialog import NO_VPN, TUNNELS, RunDialog
from appjail.desktop.tray import Tray
from appjail.desktop.worker import Session
from appjail.model import ValidationError
from appjail.profiles import Profile

from ..unit.test_cli_tunnel_file import TEXT as WG_TEXT  # valid: checked before the call
from ..unit.test_report import tunnel_jail



def test_each_tunnel_the_dialog_offers_is_a_file_option_of_the_table():
    files = {option.key for option in model.OPTIONS if option.file}
    assert TUNNELS and {tunnel.key for tunnel in TUNNELS} <= files


def test_run_dialog_chooses_a_wireguard_file_instead_of_a_vpn(qtbot, monkeypatch, tmp_path):
    dialog = RunDialog(["wg0"])
    qtbot.addWidget(dialog)
    assert [dialog.tunnel.itemText(i) for i in range(dialog.tunnel.count())] == ["none", "WireGuard file", "OpenVPN file"]
    assert not dialog.choose.isEnabled() and not dialog.tunnel_file.isEnabled()
    dialog.command.setText("curl http://192.0.2.80/")
    dialog.vpn.setCurrentText("wg0")
    dialog.tunnel.setCurrentText("WireGuard file")
    assert not dialog.vpn.isEnabled() and dialog.vpn.currentText() == NO_VPN, "a tunnel is the only way out"
    with pytest.raises(ValidationError, match="^choose the WireGuard file$"):
        dialog.read()
    asked = []
    chosen = str(tmp_path / "wg.conf")

    def chooser(parent, title, start, filters):
        asked.append((title, filters))
        return chosen, filters
    monkeypatch.setattr(QFileDialog, "getOpenFileName", chooser)
    dialog.choose.click()
    assert asked == [("appjail: WireGuard file", "WireGuard files (*.conf);;All files (*)")]
    assert dialog.tunnel_file.text() == chosen
    assert dialog.read() == ({"name": "curl", "wireguard": chosen}, ["curl", "http://192.0.2.80/"])
    dialog.tunnel.setCurrentText("none")
    assert dialog.vpn.isEnabled() and "wireguard" not in dialog.read()[0]


class StandInClient:
    """The helper as the tray's worker sees it: a listing, and the runs it was asked for."""

    def __init__(self, jails: list[dict], uid: int | None = None) -> None:
        self.jails, self.runs, self.stops = jails, [], []
        self.uid = os.getuid() if uid is None else uid

    def list(self) -> list[dict]:
        return self.jails

    def whoami(self) -> dict:
        return {"uid": self.uid}

    def inspect(self, name: str) -> dict:
        return next(j for j in self.jails if j["name"] == name)

    def stop(self, name: str) -> None:
        self.stops.append(name)

    def run(self, options, argv, env, cwd, fds) -> tuple[str, int, int]:
        self.runs.append(options)
        read, write = os.pipe()
        os.write(write, b"0 0\n")
        os.close(write)
        return options["name"], 4242, read


@pytest.fixture
def tray_with(qtbot):
    trays = []

    def make(profiles: dict, jails: list[dict], uid: int | None = None) -> tuple[Tray, StandInClient]:
        client = StandInClient(jails, uid)
        tray = Tray(client_factory=lambda: client, session=Session(env=[b"PATH=/bin"], cwd=b"/", log_dir=None),
                    profiles_loader=lambda: profiles, use_tray=False)
        qtbot.addWidget(tray.window)
        trays.append(tray)
        return tray, client
    yield make
    for tray in trays:
        tray.close()


def wg_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "wg.conf"
    path.write_text(WG_TEXT)
    path.chmod(mode)
    return path


def test_the_menu_shows_profiles_and_jails_with_tunnels(tray_with, qtbot, tmp_path):
    path = wg_file(tmp_path)
    profiles = {"vpn": Profile("vpn", ("firefox",), {"name": "vpn", "wireguard": str(path)}),
                "web": Profile("web", ("curl",), {"name": "web"})}
    down, idle = {**tunnel_jail("down"), "name": "wgb"}, {**tunnel_jail("idle"), "name": "wgc"}
    tray, _ = tray_with(profiles, [tunnel_jail(), down, idle])
    qtbot.waitUntil(lambda: tray.jail_menu_names() == ["wga", "wgb", "wgc"], timeout=5000)
    assert tray.profile_action("vpn").text() == "Start vpn (WireGuard)"
    assert tray.profile_action("vpn").toolTip() == f"firefox  (wireguard {path})"
    assert tray.profile_action("web").text() == "Start web"
    entries = [a.text() for a in tray.menu.actions() if a.menu()]
    assert entries == ["wga (1 process, WireGuard)", "wgb (1 process, WireGuard down)",
                       "wgc (1 process, WireGuard idle)"]


def test_a_tunnel_profile_sends_the_files_text_and_a_bad_file_is_explained(tray_with, qtbot, tmp_path):
    path = wg_file(tmp_path)
    tray, client = tray_with({"vpn": Profile("vpn", ("firefox",), {"name": "vpn", "wireguard": str(path)})}, [])
    tray.profile_action("vpn").trigger()
    qtbot.waitUntil(lambda: client.runs != [], timeout=5000)
    assert client.runs == [{"name": "vpn", "wireguard": WG_TEXT}], "the text, read as the user, never the path"
    path.chmod(0o666)
    tray.profile_action("vpn").trigger()
    qtbot.waitUntil(lambda: any(title == "Not started" for title, _ in tray.notifications), timeout=5000)
    (text,) = [text for title, text in tray.notifications if title == "Not started"]
    assert text == f"firefox: --wireguard {path}: others may write it (mode 666); chmod go-w it"
    assert len(client.runs) == 1


def test_inspector_shows_the_tunnel_and_warns_when_it_is_down(qtbot):
    window = InspectorWindow("wga")
    qtbot.addWidget(window)
    window.show_jail(tunnel_jail())
    assert "WireGuard tunnel (up)" in window.summary.text()
    assert "tunnel: wireguard to 198.51.100.1:51820, up, handshake" in window.summary.text()
    assert window.warning.isHidden() and not window.no_hook.isHidden() and window.blocked.isHidden()
    window.show_jail(tunnel_jail("idle", handshake_age=400, now=time.time()))
    assert "WireGuard tunnel (idle)" in window.summary.text() and window.warning.isHidden()
    window.show_jail(tunnel_jail("down", handshake_age=400, now=time.time()))
    assert not window.warning.isHidden()
    assert window.warning.text().startswith("TUNNEL DOWN: 198.51.100.1:51820 does not answer its handshakes")
    assert "TUNNEL DOWN, handshake 6 min ago" in window.summary.text()


def test_a_manager_sees_two_users_jails_of_one_name_apart_and_acts_on_the_right_one(tray_with, qtbot):
    mine = {**tunnel_jail(), "name": "firefox", "owner_uid": 4242}
    roots = {**tunnel_jail(), "name": "firefox", "owner_uid": 0}
    tray, client = tray_with({}, [mine, roots], uid=4242)
    qtbot.waitUntil(lambda: tray.jail_menu_names() == ["firefox", "root/firefox"], timeout=5000)
    (submenu,) = [a.menu() for a in tray.menu.actions() if a.menu() and a.menu().objectName() == "jail:root/firefox"]
    (stop,) = [a for a in submenu.actions() if a.text() == "Stop"]
    stop.trigger()
    qtbot.waitUntil(lambda: client.stops != [], timeout=5000)
    assert client.stops == ["root/firefox"], "the helper's USER/NAME, not the manager's own jail"



def test_the_menu_shows_a_jails_forwarded_port(tray_with, qtbot):
    forwarded = {"method": "natpmp", "gateway": "10.2.0.1", "state": "mapped", "port": 51803, "expires": 0,
                 "renewals": 0, "error": ""}
    mapped = {**tunnel_jail(), "forwarded_port": forwarded}
    lost = {**tunnel_jail(), "name": "wgb", "forwarded_port": {**forwarded, "state": "lost", "port": 0}}
    tray, _ = tray_with({}, [mapped, lost])
    qtbot.waitUntil(lambda: tray.jail_menu_names() == ["wga", "wgb"], timeout=5000)
    assert [a.text() for a in tray.menu.actions() if a.menu()] == [
        "wga (1 process, WireGuard, port 51803)", "wgb (1 process, WireGuard, port lost)"]
