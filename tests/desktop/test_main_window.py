"""The main window (where there is no tray) and the tray's state icon, on a stand-in helper: the jails
with owner, way out, state and rates; profiles started from their buttons; Inspect and Stop from the
keyboard; its size remembered; the icon and tooltip telling a blocking kill switch or a tunnel down."""

from __future__ import annotations

import os

from PyQt6.QtCore import QSettings, Qt
from PyQt6.QtWidgets import QMainWindow

from appjail.desktop.state import BADGE_CENTRE, BADGES, State, overall, state_icon
from appjail.profiles import Profile
from appjail.report import owner

from ..unit.test_report import tunnel_jail
from .test_tunnels import tray_with  # noqa: F401

ME = os.getuid()


def vpn_jail(name: str = "web", vpn_up: bool = True, rx: int = 0) -> dict:
    return {"name": name, "owner_uid": ME, "netns": f"aj-{name}", "address": "10.231.0.2", "vpn": "wg0",
            "vpn_up": vpn_up, "dns": ["192.0.2.53"], "pids": [42, 43],
            "counters": {"rx_bytes": rx, "tx_bytes": 0, "dropped_packets": 3}}


def nat_jail(name: str = "nat") -> dict:
    return {"name": name, "owner_uid": ME, "address": "10.231.0.3", "dns": [], "pids": [7], "counters": {}}


def test_the_window_replaces_the_small_one_and_lists_jails_with_owner_way_out_state_and_rates(tray_with, qtbot):
    tray, client = tray_with({}, [vpn_jail(), nat_jail(), tunnel_jail("down")])
    window = tray.window
    assert isinstance(window, QMainWindow) and window.isVisible()
    qtbot.waitUntil(lambda: window.jail_names() == ["nat", "web", "wga"], timeout=5000)
    assert window.jail_row("web")[:5] == ["web", owner(ME), "VPN wg0", "VPN up", "2"]
    assert window.jail_row("nat")[2:4] == ["NAT", "fine"]
    assert window.jail_row("wga")[2:4] == ["WireGuard tunnel", "tunnel down"]
    tray.jails = {}
    window.show_jails({"web": vpn_jail(rx=0)}, now=100.0)
    window.show_jails({"web": vpn_jail(rx=50_000)}, now=102.0)
    assert window.jail_row("web")[5:] == ["25.0 kB/s", "0 B/s", "3"]


def test_a_profile_starts_from_its_button_and_from_the_keyboard(tray_with, qtbot):
    profiles = {"dl": Profile("dl", ("curl", "http://192.0.2.80/"), {"name": "dl", "vpn": "wg0"}),
                "web": Profile("web", ("python3",), {"name": "web"})}
    tray, client = tray_with(profiles, [])
    window = tray.window
    assert [window.profiles.item(r, 1).text() for r in range(2)] == ["VPN wg0", "jail web"]
    qtbot.mouseClick(window.start_button("dl"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(client.runs) == 1, timeout=5000)
    assert client.runs == [{"name": "dl", "vpn": "wg0"}]
    window.profiles.setFocus()
    window.profiles.setCurrentCell(1, 0)
    qtbot.keyClick(window.profiles, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(client.runs) == 2, timeout=5000)
    assert client.runs[1] == {"name": "web"}


def test_inspect_and_stop_act_on_the_selected_jail(tray_with, qtbot):
    tray, client = tray_with({}, [vpn_jail(), nat_jail()])
    window = tray.window
    qtbot.waitUntil(lambda: window.jail_names() == ["nat", "web"], timeout=5000)
    assert not window.stop_action.isEnabled()
    window.jails.selectRow(1)
    assert window.inspect_action.shortcut().toString() == "Ctrl+I"
    window.inspect_action.trigger()
    assert "web" in tray.inspectors
    window.stop_action.trigger()
    qtbot.waitUntil(lambda: client.stops == ["web"], timeout=5000)
    window.show_jails({"web": vpn_jail(), "nat": nat_jail()})
    assert window.selected_jail() == "web", "a refresh keeps the selection"


def test_the_window_remembers_its_size(tray_with, qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "tray.conf"), QSettings.Format.IniFormat)
    tray, _ = tray_with({}, [])
    tray.window.settings = settings
    tray.window.resize(700, 450)
    tray.window.close()
    from appjail.desktop.main_window import MainWindow
    again = MainWindow(tray.icon, [tray.actions[k] for k in ("run", "pick", "autostart", "quit")], settings)
    qtbot.addWidget(again)
    assert (again.width(), again.height()) == (700, 450)


def test_the_icon_and_tooltip_say_when_a_kill_switch_blocks_or_a_tunnel_is_down(tray_with, qtbot):
    tray, _ = tray_with({}, [])
    fine_key = tray.icon.cacheKey()
    tray.on_jails({"web": vpn_jail(), "wga": tunnel_jail()})
    assert tray.state is State.FINE and tray.tooltip == "appjail: 2 jails, all fine"
    tray.on_jails({"web": vpn_jail(), "wga": tunnel_jail("down")})
    assert tray.state is State.TUNNEL_DOWN
    assert tray.tooltip == "appjail: a tunnel is down\nwga: tunnel down"
    tray.on_jails({"web": vpn_jail(vpn_up=False), "wga": tunnel_jail("down")})
    assert tray.state is State.BLOCKING and tray.icon.cacheKey() != fine_key
    assert tray.tooltip == ("appjail: a kill switch is blocking\nweb: kill switch blocking (wg0 down or missing)\n"
                            "wga: tunnel down")
    assert not tray.window.banner.isHidden() and "web: kill switch blocking" in tray.window.banner.text()
    assert tray.window.windowIcon().cacheKey() == tray.icon.cacheKey()
    tray.on_jails({"web": vpn_jail()})
    assert tray.state is State.FINE and tray.window.banner.isHidden()


def test_each_state_has_its_badge():
    centre = (int(BADGE_CENTRE.x()) + 6, int(BADGE_CENTRE.y()))  # beside the "!"
    colours = {state: state_icon(state).pixmap(64, 64).toImage().pixelColor(*centre).name() for state in State}
    assert colours[State.BLOCKING] == BADGES[State.BLOCKING].name()
    assert colours[State.TUNNEL_DOWN] == BADGES[State.TUNNEL_DOWN].name()
    assert colours[State.FINE] == "#2e7d32", "appjail.svg's own green tick"


def test_repairs_are_named_in_the_state():
    jail = {**nat_jail(), "repairs": {"count": 2, "last": 1, "what": "x"}}
    assert overall({"nat": jail}) == (State.FINE, "appjail: 1 jail, all fine")
    from appjail.desktop.state import condition
    assert condition(jail) == "fine; rules repaired 2×"


def test_a_second_start_opens_the_running_trays_window(tray_with, qtbot, tmp_path):
    from appjail.desktop.tray import SecondStarts, ask_running_tray

    name = str(tmp_path / "tray.socket")
    assert not ask_running_tray(name), "none runs yet: this one becomes the tray"
    tray, _ = tray_with({}, [])
    server = SecondStarts(tray, name)
    try:
        tray.window.hide()
        assert ask_running_tray(name)
        qtbot.waitUntil(tray.window.isVisible, timeout=5000)
    finally:
        server.close()
