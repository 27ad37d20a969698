"""appjail-tray against the real helper in the lab (pytest-qt, offscreen).

The tray runs in the test process, but its bus connections are made with
the test user's identity (the bus daemon takes the peer's credentials at
connect time), so the helper and polkit see that user, as with a real tray.
"""

from __future__ import annotations

import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PyQt6.QtCore import QTimer

from appjail.client import Client
from appjail.desktop.tray import Tray
from appjail.desktop.worker import Session
from appjail.helper.kernel.netns import list_namespaces
from appjail.lab.helper import UserCommand
from appjail.profiles import Profile

from .helperlab import DNS, MEMBER, OUTSIDER, USER_PYTHON, appjail, user_command, wait_until

_identity_lock = threading.Lock()


def client_as(user: str, bus_address: str) -> Callable[[], Client]:
    entry = pwd.getpwnam(user)

    def connect() -> Client:
        with _identity_lock:
            groups = os.getgroups()
            os.setgroups(os.getgrouplist(user, entry.pw_gid))
            os.setegid(entry.pw_gid)
            os.seteuid(entry.pw_uid)
            try:
                return Client(bus_address)
            finally:
                os.seteuid(0)
                os.setegid(0)
                os.setgroups(groups)
    return connect


def session_of(user: str) -> Session:
    env = UserCommand("").env(user)
    return Session(env=[f"{k}={v}".encode() for k, v in env.items()],
                   cwd=os.fsencode(pwd.getpwnam(user).pw_dir), log_dir=None)


def download_profile(lab, rate: int = 150_000, size: int = 3_000_000) -> Profile:
    command = ("curl", "-sS", "-o", "/dev/null", f"http://{lab.SERVER_ADDR}/bytes/{size}?rate={rate}")
    return Profile("dl", command, {"name": "dl", "dns": [DNS]})


@pytest.fixture
def make_tray(qtbot, helper, in_host):  # the tray's process is on the helper's host, as a user's would be
    trays = []

    def make(user: str, profiles: dict) -> Tray:
        tray = Tray(client_factory=client_as(user, helper.bus_address), session=session_of(user),
                    profiles_loader=lambda: profiles, use_tray=False)
        qtbot.addWidget(tray.window)
        trays.append(tray)
        return tray
    yield make
    for tray in trays:
        tray.close()


def jail_submenu_action(tray: Tray, name: str, label: str):
    (menu,) = [a.menu() for a in tray.menu.actions() if a.menu() and a.menu().objectName() == f"jail:{name}"]
    (action,) = [a for a in menu.actions() if a.text() == label]
    return action


def peers(window) -> list[str]:
    return [window.table.item(row, 2).text() for row in range(window.table.rowCount())
            if window.table.item(row, 2) is not None]


def test_profile_click_starts_a_jail_the_inspector_shows_it_and_stop_removes_it(make_tray, qtbot, lab):
    tray = make_tray(MEMBER, {"dl": download_profile(lab)})
    tray.profile_action("dl").trigger()
    qtbot.waitUntil(lambda: "dl" in tray.jail_menu_names(), timeout=10_000)
    window = tray.inspect("dl")
    qtbot.waitUntil(lambda: window.latest_rates()[0] > 10_000, timeout=10_000)
    qtbot.waitUntil(lambda: lab.SERVER_ADDR in peers(window), timeout=10_000)
    jail_submenu_action(tray, "dl", "Stop").trigger()
    qtbot.waitUntil(lambda: "dl" not in tray.jail_menu_names(), timeout=15_000)
    qtbot.waitUntil(lambda: list_namespaces("aj-") == [], timeout=10_000)  # its teardown follows the listing
    assert "dl" not in tray.inspectors


def test_a_refused_user_and_a_stopped_helper_are_explained(make_tray, qtbot, lab, helper):
    tray = make_tray(OUTSIDER, {"dl": download_profile(lab)})
    tray.profile_action("dl").trigger()
    qtbot.waitUntil(lambda: any(title == "Not started" and "not authorized" in text
                                for title, text in tray.notifications), timeout=10_000)
    assert list_namespaces("aj-") == []

    helper.kill(signal.SIGTERM)
    tray.want_list.emit()
    qtbot.waitUntil(lambda: "appjail-helper is not running" in tray.status, timeout=10_000)
    assert "appjail-helper is not running" in tray.window.statusBar().currentMessage()
    # still responsive: the GUI thread answers a timer right away
    fired = []
    QTimer.singleShot(0, lambda: fired.append(time.monotonic()))
    qtbot.waitUntil(lambda: bool(fired), timeout=200)


def test_vpn_loss_is_notified(make_tray, qtbot, lab, helper):
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "vpn", "--vpn", lab.wg_ifname, "--dns", DNS,
                   "--", "true").returncode == 0
    tray = make_tray(MEMBER, {})
    qtbot.waitUntil(lambda: "vpn" in tray.jail_menu_names(), timeout=10_000)
    lab.wg_down()
    try:
        qtbot.waitUntil(lambda: any(title == "VPN gone" for title, _ in tray.notifications), timeout=10_000)
    finally:
        lab.wg_up()


WATCH_S = 30
IDLE_S = 20


def test_gui_thread_stays_free_and_the_tray_idles_with_five_jails_watched(make_tray, qtbot, lab, helper):
    names = [f"w{i}" for i in range(5)]
    for name in names:
        assert appjail(helper, MEMBER, "run", "--keep", "--name", name, "--dns", DNS, "--", "true").returncode == 0
    tray = make_tray(MEMBER, {})
    qtbot.waitUntil(lambda: sorted(tray.jail_menu_names()) == names, timeout=10_000)
    windows = [tray.inspect(name) for name in names]
    qtbot.waitUntil(lambda: all(w._last is not None for w in windows), timeout=10_000)

    cpu_before = _cpu_seconds()
    qtbot.wait(IDLE_S * 1000)
    cpu = (_cpu_seconds() - cpu_before) / IDLE_S

    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: beats.append(time.monotonic()))
    heartbeat.start(10)
    qtbot.wait(WATCH_S * 1000)
    heartbeat.stop()
    worst_gap = max(b - a for a, b in zip(beats, beats[1:]))
    print(f"\n5 jails watched: tray CPU {cpu * 100:.2f}% of one core over {IDLE_S} s; worst "
          f"GUI-thread gap {worst_gap * 1000:.1f} ms over {WATCH_S} s (heartbeat every 10 ms)")
    assert worst_gap < 0.050
    assert cpu < 0.02
    assert all(len(w.times) >= IDLE_S + WATCH_S - 5 for w in windows)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_kill_switch_blocked_table_and_one_notification(make_tray, qtbot, lab, helper):
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "kst", "--vpn", lab.wg_ifname, "--dns", DNS,
                   "--", "true").returncode == 0
    tray = make_tray(MEMBER, {})
    qtbot.waitUntil(lambda: "kst" in tray.jail_menu_names(), timeout=10_000)
    window = tray.inspect("kst")
    lab.wg_down()
    try:
        for _ in range(2):  # two curls, several retransmissions: one episode
            appjail(helper, MEMBER, "run", "--name", "kst", "--", "curl", "-sS", "--max-time", "2",
                    f"http://{lab.SERVER_ADDR}/")
        kill_switch = [["tcp", f"{lab.SERVER_ADDR}:80", "kill switch"]]
        qtbot.waitUntil(lambda: [row[:3] for row in window.blocked_texts()] == kill_switch, timeout=10_000)
        qtbot.waitUntil(lambda: any(title == "Kill switch" for title, _ in tray.notifications), timeout=10_000)
        qtbot.wait(5000)  # more listings while it stays down
        assert [title for title, _ in tray.notifications].count("Kill switch") == 1
        assert window.blocked_label.text() == "Blocked (1)"
    finally:
        lab.wg_up()


def test_inspector_axis_in_human_units_and_owner_names(make_tray, qtbot, lab, helper):
    tray = make_tray(MEMBER, {"dl": download_profile(lab, rate=150_000)})
    tray.profile_action("dl").trigger()
    qtbot.waitUntil(lambda: "dl" in tray.jail_menu_names(), timeout=10_000)
    window = tray.inspect("dl")
    qtbot.waitUntil(lambda: window.latest_rates()[0] > 50_000, timeout=10_000)
    qtbot.waitUntil(lambda: "kB/s" in window.plot.axis_label(), timeout=5_000)
    assert "since the jail started" in window.summary.text()
    menu_entry = next(a.text() for a in tray.menu.actions() if a.menu() and a.text().startswith("dl ("))
    assert menu_entry == "dl (1 process)", menu_entry
    listing = appjail(helper, MEMBER, "ls").stdout.splitlines()
    assert listing[1].split()[:2] == ["dl", MEMBER], listing
    jail_submenu_action(tray, "dl", "Stop").trigger()
    qtbot.waitUntil(lambda: "dl" not in tray.jail_menu_names(), timeout=15_000)


def test_a_wireguard_profile_from_the_menu_goes_through_its_tunnel(make_tray, qtbot, lab, tmp_path):
    path = tmp_path / "wg.conf"  # the tray reads it as its user (here root, whose file it is)
    path.write_text(lab.wg_peer("203.0.113.30"))
    path.chmod(0o600)
    command = ("curl", "-sS", "-o", "/dev/null", f"http://{lab.SERVER_ADDR}/bytes/3000000?rate=150000")
    tray = make_tray(MEMBER, {"wgp": Profile("wgp", command, {"name": "wgp", "wireguard": str(path)})})
    assert tray.profile_action("wgp").text() == "Start wgp (WireGuard)"
    tray.profile_action("wgp").trigger()
    qtbot.waitUntil(lambda: "wgp" in tray.jail_menu_names(), timeout=10_000)
    window = tray.inspect("wgp")
    qtbot.waitUntil(lambda: "tunnel: wireguard to" in window.summary.text()
                    and window.latest_rates()[0] > 10_000, timeout=10_000)
    assert "WireGuard tunnel (up)" in window.summary.text() and window.blocked.isHidden()
    qtbot.waitUntil(lambda: any(a.text() == "wgp (1 process, WireGuard)" for a in tray.menu.actions()),
                    timeout=5_000)
    assert lab.http_log()[-1]["client"] == "203.0.113.30"
    jail_submenu_action(tray, "wgp", "Stop").trigger()
    qtbot.waitUntil(lambda: "wgp" not in tray.jail_menu_names(), timeout=15_000)
    qtbot.waitUntil(lambda: list_namespaces("aj-") == [], timeout=10_000)


def test_the_main_window_lists_the_jails_and_starts_a_profile(make_tray, qtbot, lab, helper):
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "mw", "--vpn", lab.wg_ifname, "--dns", DNS,
                   "--", "true").returncode == 0
    tray = make_tray(MEMBER, {"dl": download_profile(lab)})
    window = tray.window
    qtbot.waitUntil(lambda: window.jail_names() == ["mw"], timeout=10_000)
    assert window.jail_row("mw")[:4] == ["mw", MEMBER, f"VPN {lab.wg_ifname}", "VPN up"]
    window.start_button("dl").click()
    qtbot.waitUntil(lambda: window.jail_names() == ["dl", "mw"], timeout=10_000)
    qtbot.waitUntil(lambda: window.jail_row("dl")[5].endswith("kB/s"), timeout=10_000)  # live, from two listings
    assert window.jail_row("dl")[2] == "NAT"
    window.jails.selectRow(0)
    window.stop_action.trigger()
    qtbot.waitUntil(lambda: window.jail_names() == ["mw"], timeout=15_000)
    assert appjail(helper, MEMBER, "stop", "mw").returncode == 0


def test_the_icon_turns_red_while_a_kill_switch_blocks(make_tray, qtbot, lab, helper):
    from appjail.desktop.state import State

    assert appjail(helper, MEMBER, "run", "--keep", "--name", "ks", "--vpn", lab.wg_ifname, "--dns", DNS,
                   "--", "true").returncode == 0
    tray = make_tray(MEMBER, {})
    qtbot.waitUntil(lambda: "ks" in tray.jail_menu_names(), timeout=10_000)
    assert tray.state is State.FINE
    fine = tray.icon.cacheKey()
    lab.wg_down()
    try:
        qtbot.waitUntil(lambda: tray.state is State.BLOCKING, timeout=10_000)
        assert tray.icon.cacheKey() != fine
        assert tray.tooltip.splitlines()[1] == f"ks: kill switch blocking ({lab.wg_ifname} down or missing)"
        assert tray.window.jail_row("ks")[3] == tray.tooltip.splitlines()[1][len("ks: "):]
    finally:
        lab.wg_up()
    qtbot.waitUntil(lambda: tray.state is State.FINE, timeout=10_000)
    assert appjail(helper, MEMBER, "stop", "ks").returncode == 0


@contextmanager
def x_server() -> Iterator[str]:
    """A real X server (Xvfb) of its own: its display, e.g. ":7". No tray host runs on it."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with os.fdopen(read) as announced:
            display = ":" + announced.readline().strip()
        assert display != ":", "Xvfb did not start"
        yield display
    finally:
        server.terminate()
        server.wait(10)


def window_icon(display: str) -> str | None:
    """The _NET_WM_ICON of the shown top-level window called "appjail", as xprop prints it (None: none)."""
    tree = subprocess.run(["xwininfo", "-display", display, "-root", "-children"], capture_output=True,
                          text=True).stdout
    shown = [line.split()[0] for line in tree.splitlines()
             if '"appjail":' in line and not re.search(r"\) +1x1\+", line)]  # not Qt's 1x1 leader
    if not shown:
        return None
    icon = subprocess.run(["xprop", "-display", display, "-id", shown[0], "_NET_WM_ICON"], capture_output=True,
                          text=True).stdout
    return icon if "_NET_WM_ICON(CARDINAL)" in icon else None


def test_the_real_tray_on_x_shows_its_window_one_instance_and_the_kill_switch_in_its_icon(helper, lab):
    """appjail-tray as the user would start it, on a real X server with no tray: its main window appears,
    a second start (the menu entry "appjail") hands over to it and ends, and the window's icon changes
    while a --vpn jail's kill switch blocks."""
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "xks", "--vpn", lab.wg_ifname, "--dns", DNS,
                   "--", "true").returncode == 0
    command = user_command(helper.bus_address)
    config = Path(pwd.getpwnam(MEMBER).pw_dir) / "x-tray-config"  # the user's own (tmp_path is root's)
    shutil.rmtree(config, ignore_errors=True)
    config.mkdir()
    os.chown(config, pwd.getpwnam(MEMBER).pw_uid, -1)
    with x_server() as display:
        kwargs = command.popen_kwargs(MEMBER)
        kwargs["env"] = {**kwargs["env"], "DISPLAY": display, "QT_QPA_PLATFORM": "xcb",
                         "XDG_CONFIG_HOME": str(config)}
        argv = [USER_PYTHON, "-c", "import sys; from appjail.desktop.tray import main; sys.exit(main())"]
        tray = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)
        try:
            assert wait_until(lambda: window_icon(display) is not None, 20), "no window called appjail"
            fine = window_icon(display)
            second = subprocess.run(argv, capture_output=True, text=True, timeout=30, **kwargs)
            assert second.returncode == 0 and tray.poll() is None, second.stderr
            lab.wg_down()
            try:
                assert wait_until(lambda: window_icon(display) not in (None, fine), 15), "the icon did not change"
            finally:
                lab.wg_up()
            assert wait_until(lambda: window_icon(display) == fine, 15), "the icon did not come back"
        finally:
            tray.terminate()
            assert tray.wait(15) == -signal.SIGTERM, tray.stderr.read()  # as at logout: Qt does not catch it
            shutil.rmtree(config, ignore_errors=True)
    assert appjail(helper, MEMBER, "stop", "xks").returncode == 0
