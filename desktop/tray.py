"""`appjail-tray`: start profiles and programs in jails, watch and stop them.

A QSystemTrayIcon with one menu, its icon and tooltip showing the jails'
state (state.py); the main window (main_window.py) where no tray is
available, and on the icon's click, the menu's "Open appjail" or a second
start (the menu entry "appjail"). The menu lists the profiles of
profiles.toml, "Run a program…", "Always run in a jail…" (app_picker.py),
the running jails (each with Inspect and Stop), "Start at login"
(autostart.py) and Quit. Bus calls run on a worker thread (worker.py); the
GUI thread only sends requests and draws answers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from PyQt6.QtCore import QObject, QSettings, QThread, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QIcon, QKeySequence
from PyQt6.QtNetwork import QLocalServer, QLocalSocket
from PyQt6.QtWidgets import QApplication, QMenu, QStyle, QSystemTrayIcon

from ..client import Client
from ..profiles import Profile, ProfileError, load_profiles
from ..report import count, tunnel_state
from . import autostart
from .app_picker import AppPicker
from .inspector import InspectorWindow
from .main_window import MainWindow, themed
from .run_dialog import RunDialog, host_interfaces, profile_tunnel, tunnel_label
from .state import State, overall, state_icon
from .worker import HelperWorker, Session

REFRESH_MS = 2000


class Tray(QObject):
    # requests to the worker's thread (queued)
    want_list = pyqtSignal()
    want_inspect = pyqtSignal(str)
    want_stop = pyqtSignal(str)
    want_launch = pyqtSignal(dict, list)

    def __init__(self, client_factory: Callable[[], Client] = Client, session: Session | None = None,
                 profiles_loader: Callable[[], dict[str, Profile]] = load_profiles,
                 use_tray: bool | None = None, settings: QSettings | None = None) -> None:
        super().__init__()
        self.profiles_loader = profiles_loader
        self.jails: dict[str, dict] = {}
        self.inspectors: dict[str, InspectorWindow] = {}
        self.notifications: list[tuple[str, str]] = []
        self.kill_switch_dropping: set[str] = set()  # jails told about in this VPN outage
        self.status = "starting…"
        self.closing = False
        self.picker: AppPicker | None = None

        self.thread = QThread()
        self.worker = HelperWorker(client_factory, session)
        self.worker.moveToThread(self.thread)
        self.want_list.connect(self.worker.refresh)
        self.want_inspect.connect(self.worker.inspect)
        self.want_stop.connect(self.worker.stop)
        self.want_launch.connect(self.worker.launch)
        self.worker.jails_listed.connect(self.on_jails)
        self.worker.inspected.connect(self.on_inspected)
        self.worker.failed.connect(self.on_failed)
        self.worker.launched.connect(self.on_launched)
        self.worker.program_ended.connect(self.on_program_ended)
        self.thread.start()

        self.menu = QMenu()
        self.menu.aboutToShow.connect(self.want_list.emit)
        self.profiles: dict[str, Profile] = {}
        self.state, self.tooltip = overall({})
        self.icon = state_icon(self.state)
        self.actions = self._app_actions()
        self.window = MainWindow(self.icon, [self.actions[key] for key in ("run", "pick", "autostart", "quit")],
                                 settings or QSettings("appjail", "appjail-tray"))
        self.window.start_profile.connect(self.start_profile)
        self.window.inspect_jail.connect(self.inspect)
        self.window.stop_jail.connect(self.want_stop.emit)
        if use_tray is None:
            use_tray = QSystemTrayIcon.isSystemTrayAvailable()
        self.tray: QSystemTrayIcon | None = None
        if use_tray:
            self.tray = QSystemTrayIcon(self.icon)
            self.tray.setContextMenu(self.menu)
            self.tray.setToolTip(self.tooltip)
            self.tray.activated.connect(self.on_activated)
            self.tray.show()
        else:
            self.window.closed.connect(self.on_window_closed)
            self.open_window()
        self.rebuild_menu()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.want_list.emit)
        self.timer.start(REFRESH_MS)
        self.want_list.emit()

    def _app_actions(self) -> dict[str, QAction]:
        """The actions the menu and the main window share (owned here, so rebuilding the menu keeps them)."""
        actions = {}
        for key, text, icon, fallback, shortcut in (
                ("open", "&Open appjail", "appjail", QStyle.StandardPixmap.SP_ComputerIcon, None),
                ("run", "&Run a program…", "system-run", QStyle.StandardPixmap.SP_MediaPlay, "Ctrl+R"),
                ("pick", "Always run in a &jail…", "list-add", QStyle.StandardPixmap.SP_FileDialogNewFolder, "Ctrl+J"),
                ("autostart", "Start at &login", "", None, None),
                ("quit", "&Quit", "application-exit", QStyle.StandardPixmap.SP_DialogCloseButton,
                 QKeySequence.StandardKey.Quit)):
            action = QAction(text, self)
            if fallback is not None:
                action.setIcon(themed(icon, fallback))
            if shortcut is not None:
                action.setShortcut(QKeySequence(shortcut))
            self._route(action, key)
            actions[key] = action
        actions["autostart"].setCheckable(True)
        actions["autostart"].setChecked(autostart.enabled())
        actions["autostart"].setToolTip(f"an entry in {autostart.autostart_path().parent}")
        return actions

    # -- the menu ------------------------------------------------------------

    def rebuild_menu(self) -> None:
        self.menu.clear()
        try:
            profiles = self.profiles_loader()
        except ProfileError as exc:
            profiles = {}
            self.set_status(str(exc))
        if profiles != self.profiles:
            self.window.show_profiles(profiles)
        self.profiles = profiles
        if self.tray is not None:
            self.menu.addAction(self.actions["open"])
            self.menu.addSeparator()
        for name, profile in profiles.items():
            tunnel = profile_tunnel(profile.options)
            action = self.menu.addAction(f"Start {name}" + (f" ({tunnel.label})" if tunnel else ""))
            action.setToolTip(profile.describe())
            action.setObjectName(f"profile:{name}")
            self._route(action, "profile", name)
        self.menu.addActions([self.actions["run"], self.actions["pick"]])
        self.menu.addSeparator()
        if self.jails:
            for name, jail in sorted(self.jails.items()):
                processes = count(len(jail.get("pids", [])), "process", "processes")
                submenu = self.menu.addMenu(f"{name} ({processes}{_way_out(jail)})")
                submenu.setObjectName(f"jail:{name}")
                self._route(submenu.addAction("Inspect"), "inspect", name)
                self._route(submenu.addAction("Stop"), "stop", name)
        else:
            self.menu.addAction("no jails").setEnabled(False)
        self.menu.addSeparator()
        status = self.menu.addAction(self.status)
        status.setEnabled(False)
        self.menu.addActions([self.actions["autostart"], self.actions["quit"]])

    def _route(self, action: QAction, what: str, name: str = "") -> None:
        action.setData((what, name))
        action.triggered.connect(self.on_menu)

    def on_menu(self) -> None:
        """Every menu entry lands here: one bound slot, no lambda holding the tray."""
        what, name = self.sender().data()
        if what == "profile":
            self.start_profile(name)
        elif what == "run":
            self.run_dialog()
        elif what == "pick":
            self.app_picker()
        elif what == "open":
            self.open_window()
        elif what == "autostart":
            autostart.set_enabled(self.actions["autostart"].isChecked())
        elif what == "inspect":
            self.inspect(name)
        elif what == "stop":
            self.want_stop.emit(name)
        elif what == "quit":
            self.quit()

    def jail_menu_names(self) -> list[str]:
        return [a.menu().objectName()[len("jail:"):] for a in self.menu.actions()
                if a.menu() is not None and a.menu().objectName().startswith("jail:")]

    def profile_action(self, name: str) -> QAction:
        (action,) = [a for a in self.menu.actions() if a.objectName() == f"profile:{name}"]
        return action

    # -- requests ------------------------------------------------------------

    def start_profile(self, name: str) -> None:
        profile = self.profiles[name]
        self.launch(dict(profile.options), list(profile.command))

    def launch(self, options: dict, command: list[str]) -> None:
        self.set_status(f"starting {' '.join(command)} in jail {options['name']}…")
        self.want_launch.emit(options, command)

    def run_dialog(self) -> None:
        dialog = RunDialog(host_interfaces(), self._dialog_parent())
        if dialog.exec() and dialog.request is not None:
            self.launch(*dialog.request)

    def app_picker(self) -> AppPicker:
        """Pick an application to jail; the profile and its menu entry are written when it is accepted."""
        self.picker = AppPicker(host_interfaces(), parent=self._dialog_parent())  # held: it may have no parent
        self.picker.accepted.connect(self.on_picked)
        self.picker.open()
        return self.picker

    def on_picked(self) -> None:
        self.notify("Profile made", "\n".join(self.sender().told))
        self.rebuild_menu()

    def _dialog_parent(self) -> MainWindow | None:
        return self.window if self.window.isVisible() else None

    def open_window(self) -> None:
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()

    def on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        """A click on the icon opens the main window (the menu is on the other button)."""
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_window()

    def inspect(self, name: str) -> InspectorWindow:
        window = self.inspectors.get(name)
        if window is None:
            window = InspectorWindow(name)
            window.setWindowIcon(self.icon)
            window.wanted.connect(self.want_inspect.emit)
            self.inspectors[name] = window
            self.want_inspect.emit(name)
        window.show()
        window.raise_()
        return window

    # -- answers -------------------------------------------------------------

    def on_jails(self, current: dict) -> None:
        for name, jail in current.items():
            before = self.jails.get(name)
            if jail.get("vpn") and before is not None and before.get("vpn_up", True) and not jail.get("vpn_up", True):
                self.notify("VPN gone", f"{jail['vpn']} of jail {name} is down or missing: the kill "
                                        "switch blocks the jail's traffic until it is back")
            elif jail.get("vpn") and before is None and not jail.get("vpn_up", True):
                self.notify("VPN missing", f"{jail['vpn']} of the new jail {name} is down or does not exist: "
                                           "the jail stays closed until it appears")
            self._note_kill_switch(name, jail, before)
            self._note_repair(name, jail, before)
        for name in set(self.inspectors) - set(current):
            self.inspectors.pop(name).close()
        menu_changed = _menu_view(current) != _menu_view(self.jails)
        self.jails = current
        self.window.show_jails(current)
        self._show_state()
        if not self.set_status(f"{len(current)} jail{'s' if len(current) != 1 else ''}") and menu_changed:
            self.rebuild_menu()

    def _note_repair(self, name: str, jail: dict, before: dict | None) -> None:
        """Tell when a host tool removed the jail's host-side rules and the helper put them back."""
        repairs = jail.get("repairs", {})
        if before is not None and repairs.get("count", 0) > before.get("repairs", {}).get("count", 0):
            self.notify("Firewall changed", f"jail {name}: {repairs['what']}. Its network is back; "
                                            "what it must not reach stayed closed throughout")

    def _note_kill_switch(self, name: str, jail: dict, before: dict | None) -> None:
        """Tell once per outage when a jail's kill switch starts dropping its traffic."""
        if jail.get("vpn_up", True):
            self.kill_switch_dropping.discard(name)
            return
        dropped = jail.get("counters", {}).get("dropped_packets", 0)
        was = (before or {}).get("counters", {}).get("dropped_packets", dropped)
        if jail.get("vpn") and dropped > was and name not in self.kill_switch_dropping:
            self.kill_switch_dropping.add(name)
            self.notify("Kill switch", f"jail {name} is trying to reach the network while {jail['vpn']} is "
                                       "down: its traffic is blocked (Inspect shows where it went)")

    def _show_state(self) -> None:
        """The icon and tooltip (the window's icon and banner) say whether a kill switch blocks or a
        tunnel is down, and which jail's."""
        state, tooltip = overall(self.jails)
        if state != self.state:
            self.icon = state_icon(state)
            self.window.setWindowIcon(self.icon)
            if self.tray is not None:
                self.tray.setIcon(self.icon)
        if (state, tooltip) != (self.state, self.tooltip):
            self.window.show_state(state, tooltip)
            if self.tray is not None:
                self.tray.setToolTip(tooltip)
        self.state, self.tooltip = state, tooltip

    def on_launched(self, name: str, pid: int) -> None:
        self.notify("Started", f"{name}: process {pid}")

    def on_inspected(self, name: str, jail: dict) -> None:
        window = self.inspectors.get(name)
        if window is not None:
            window.show_jail(jail)

    def on_failed(self, what: str, reason: str) -> None:
        if what.startswith("start "):
            self.notify("Not started", f"{what[len('start '):]}: {reason}")
        self.set_status(f"cannot {what}: {reason}")

    def on_program_ended(self, name: str, status: int) -> None:
        if status:
            self.notify("Program ended", f"in jail {name}, with status {status}")
        self.want_list.emit()

    def notify(self, title: str, text: str) -> None:
        self.notifications.append((title, text))
        if self.tray is not None:
            self.tray.showMessage(f"appjail: {title}", text, self.icon)
        else:
            self.set_status(f"{title}: {text}")

    def set_status(self, text: str) -> bool:
        """Show `text` as the status; whether the menu was rebuilt for it."""
        if text == self.status:
            return False
        self.status = text
        self.window.show_status(text)
        self.rebuild_menu()
        return True

    def on_window_closed(self) -> None:
        """Without a tray, closing the window ends appjail-tray: nothing else would be left to show."""
        if not self.closing:
            self.quit()

    def quit(self) -> None:
        self.close()
        QApplication.quit()

    def close(self) -> None:
        self.timer.stop()
        for window in self.inspectors.values():
            window.close()
        self.thread.quit()
        self.thread.wait(5000)
        if self.tray is not None:
            self.tray.hide()
        self.closing = True
        self.window.close()


def _menu_view(jails: dict[str, dict]) -> list[tuple]:
    """What the menu shows of the jails: rebuild it only when this changes."""
    return [(name, len(j.get("pids", [])), _way_out(j)) for name, j in sorted(jails.items())]


def _way_out(jail: dict) -> str:
    """", wg0" for a --vpn jail, ", WireGuard" for a tunnel jail (", WireGuard down" / " idle",
    ", OpenVPN connecting"), "" for NAT; then its forwarded port (", port 51803", ", port lost")."""
    tunnel = jail.get("tunnel")
    if tunnel:
        state = tunnel_state(tunnel)
        way = f", {tunnel_label(tunnel['type'])}" + ("" if state == "up" else f" {state}")
    else:
        way = f", {jail['vpn']}" if jail.get("vpn") else ""
    forwarded = jail.get("forwarded_port")
    if forwarded:
        way += f", port {forwarded['port']}" if forwarded["port"] else f", port {forwarded['state']}"
    return way


def instance_name() -> str:
    """The local socket a running tray listens on, one per user."""
    return f"appjail-tray-{os.getuid()}"


def ask_running_tray(name: str) -> bool:
    """Whether a tray already runs (listening on NAME); it is asked to open its window."""
    running = QLocalSocket()
    running.connectToServer(name)
    if not running.waitForConnected(1000):
        return False
    running.write(b"open\n")
    running.waitForBytesWritten(1000)
    running.disconnectFromServer()
    return True


class SecondStarts(QLocalServer):
    """The running tray's end of ask_running_tray: each connection opens the main window."""

    def __init__(self, tray: Tray, name: str) -> None:
        super().__init__()
        self.tray = tray
        self.newConnection.connect(self.on_connection)
        QLocalServer.removeServer(name)  # a crashed tray's socket
        self.listen(name)

    def on_connection(self) -> None:
        while (connection := self.nextPendingConnection()) is not None:
            connection.disconnectFromServer()
        self.tray.open_window()


def main() -> int:
    """Start the tray; a second start (the menu entry "appjail") opens the running one's window instead.
    `--background` (the autostart entry) leaves the window closed where a tray shows the icon."""
    app = QApplication(sys.argv)
    app.setApplicationName("appjail")
    app.setQuitOnLastWindowClosed(False)
    app.setWindowIcon(QIcon.fromTheme("appjail", state_icon(State.FINE)))
    if ask_running_tray(instance_name()):
        return 0
    tray = Tray()
    server = SecondStarts(tray, instance_name())
    if tray.tray is not None and autostart.BACKGROUND not in sys.argv[1:]:
        tray.open_window()
    status = app.exec()
    server.close()
    tray.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
