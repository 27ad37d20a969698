"""`appjail-tray`: start profiles and programs in jails, watch and stop them.

A QSystemTrayIcon with one menu; where no tray is available, a small window
holding the same menu behind a button. The menu lists the profiles of
profiles.toml, "Run a program…", the running jails (each with Inspect and
Stop) and Quit. Bus calls run on a worker thread (worker.py); the GUI thread
only sends requests and draws answers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from PyQt6.QtCore import QObject, QThread, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QIcon
from PyQt6.QtWidgets import (QApplication, QLabel, QMenu, QPushButton, QSystemTrayIcon, QVBoxLayout,
                             QWidget)

from ..client import Client
from ..profiles import Profile, ProfileError, load_profiles
from ..report import count, tunnel_state
from .inspector import InspectorWindow
from .run_dialog import RunDialog, host_interfaces, profile_tunnel, tunnel_label
from .worker import HelperWorker, Session

ICON = Path(__file__).with_name("appjail.svg")
REFRESH_MS = 2000


class Tray(QObject):
    # requests to the worker's thread (queued)
    want_list = pyqtSignal()
    want_inspect = pyqtSignal(str)
    want_stop = pyqtSignal(str)
    want_launch = pyqtSignal(dict, list)

    def __init__(self, client_factory: Callable[[], Client] = Client, session: Session | None = None,
                 profiles_loader: Callable[[], dict[str, Profile]] = load_profiles,
                 use_tray: bool | None = None) -> None:
        super().__init__()
        self.profiles_loader = profiles_loader
        self.jails: dict[str, dict] = {}
        self.inspectors: dict[str, InspectorWindow] = {}
        self.notifications: list[tuple[str, str]] = []
        self.kill_switch_dropping: set[str] = set()  # jails told about in this VPN outage
        self.status = "starting…"

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
        self.icon = QIcon(str(ICON))
        if use_tray is None:
            use_tray = QSystemTrayIcon.isSystemTrayAvailable()
        self.tray: QSystemTrayIcon | None = None
        self.window: QWidget | None = None
        if use_tray:
            self.tray = QSystemTrayIcon(self.icon)
            self.tray.setContextMenu(self.menu)
            self.tray.setToolTip("appjail")
            self.tray.show()
        else:
            self._build_window()
        self.rebuild_menu()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.want_list.emit)
        self.timer.start(REFRESH_MS)
        self.want_list.emit()

    def _build_window(self) -> None:
        """No system tray here: the same menu behind a button, and a status line."""
        self.window = QWidget()
        self.window.setWindowTitle("appjail")
        self.window.setWindowIcon(self.icon)
        button = QPushButton("appjail ▾")
        button.setMenu(self.menu)
        self.status_label = QLabel(self.status)
        self.status_label.setWordWrap(True)
        layout = QVBoxLayout(self.window)
        layout.addWidget(button)
        layout.addWidget(self.status_label)
        self.window.resize(320, 120)
        self.window.show()

    # -- the menu ------------------------------------------------------------

    def rebuild_menu(self) -> None:
        self.menu.clear()
        try:
            profiles = self.profiles_loader()
        except ProfileError as exc:
            profiles = {}
            self.set_status(str(exc))
        self.profiles = profiles
        for name, profile in profiles.items():
            tunnel = profile_tunnel(profile.options)
            action = self.menu.addAction(f"Start {name}" + (f" ({tunnel.label})" if tunnel else ""))
            action.setToolTip(profile.describe())
            action.setObjectName(f"profile:{name}")
            self._route(action, "profile", name)
        self._route(self.menu.addAction("Run a program…"), "run")
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
        self._route(self.menu.addAction("Quit"), "quit")

    def _route(self, action: QAction, what: str, name: str = "") -> None:
        action.setData((what, name))
        action.triggered.connect(self.on_menu)

    def on_menu(self) -> None:
        """Every menu entry lands here: one bound slot, no lambda holding the tray."""
        what, name = self.sender().data()
        if what == "profile":
            profile = self.profiles[name]
            self.launch(dict(profile.options), list(profile.command))
        elif what == "run":
            self.run_dialog()
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

    def launch(self, options: dict, command: list[str]) -> None:
        self.set_status(f"starting {' '.join(command)} in jail {options['name']}…")
        self.want_launch.emit(options, command)

    def run_dialog(self) -> None:
        dialog = RunDialog(host_interfaces())
        if dialog.exec() and dialog.request is not None:
            self.launch(*dialog.request)

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
        if self.window is not None:
            self.status_label.setText(text)
        self.rebuild_menu()
        return True

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
        if self.window is not None:
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


def main() -> int:
    app = QApplication(sys.argv)
    app.setApplicationName("appjail")
    app.setQuitOnLastWindowClosed(False)
    tray = Tray()
    status = app.exec()
    tray.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
