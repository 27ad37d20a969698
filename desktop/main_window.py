"""appjail's main window: where the desktop shows no tray (GNOME without an extension), and from
the tray icon or the menu entry "appjail" elsewhere.

The jails (owner, way out, tunnel or kill-switch state, live rates from successive listings), the
profiles with a Start button each, and the tray's own actions (run a program, the app picker, start
at login, quit) in a menu bar and a tool bar; Inspect and Stop act on the selected jail. Standard
widgets, the theme's icons (with Qt's own as fallbacks), a shortcut for each action, and the size
it had last time (QSettings).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from PyQt6.QtCore import QSettings, Qt, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QColor, QIcon, QKeySequence
from PyQt6.QtWidgets import (QAbstractItemView, QApplication, QGroupBox, QHeaderView, QLabel, QMainWindow,
                             QPushButton, QStyle, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..menuentries import way_out as menu_way_out
from ..profiles import Profile
from ..report import normalised, owner, rate
from .state import State, condition, jail_state, way_out

JAIL_HEADERS = ("Jail", "Owner", "Way out", "State", "Processes", "In", "Out", "Dropped")
PROFILE_HEADERS = ("Profile", "Way out", "Command", "")
DEFAULT_SIZE = (900, 600)
GEOMETRY_KEY = "main_window/geometry"
ALARM = "#c62828"
BANNERS = {State.BLOCKING: f"background: {ALARM}", State.TUNNEL_DOWN: "background: #ef6c00"}


def themed(name: str, fallback: QStyle.StandardPixmap) -> QIcon:
    """The theme's icon of that name, else Qt's own standard one."""
    style = QApplication.style()
    return QIcon.fromTheme(name, style.standardIcon(fallback) if style is not None else QIcon())


class MainWindow(QMainWindow):
    start_profile = pyqtSignal(str)
    inspect_jail = pyqtSignal(str)
    stop_jail = pyqtSignal(str)
    closed = pyqtSignal()

    def __init__(self, icon: QIcon, app_actions: Sequence[QAction], settings: QSettings) -> None:
        """app_actions: the tray's (run, pick, start at login, quit), shared with its menu."""
        super().__init__()
        self.settings = settings
        self.setWindowTitle("appjail")
        self.setWindowIcon(icon)
        self._rates: dict[str, tuple[float, dict]] = {}
        self.inspect_action = self._action("&Inspect", "utilities-system-monitor",
                                           QStyle.StandardPixmap.SP_FileDialogContentsView, "Ctrl+I", self._inspect)
        self.stop_action = self._action("&Stop", "process-stop", QStyle.StandardPixmap.SP_BrowserStop,
                                        QKeySequence.StandardKey.Delete, self._stop)
        file_menu = self.menuBar().addMenu("&appjail")
        file_menu.addActions(list(app_actions[:-1]))
        file_menu.addSeparator()
        file_menu.addAction(app_actions[-1])
        self.menuBar().addMenu("&Jail").addActions([self.inspect_action, self.stop_action])
        toolbar = self.addToolBar("Actions")
        toolbar.setObjectName("actions")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.addActions([action for action in app_actions[:2]])
        toolbar.addSeparator()
        toolbar.addActions([self.inspect_action, self.stop_action])

        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.hide()
        self.jails = _table(JAIL_HEADERS)
        self.jails.itemSelectionChanged.connect(self._selection_changed)
        self.jails.itemActivated.connect(self._inspect)
        self.no_jails = QLabel("No jails. Start a profile below, or run a program (Ctrl+R).")
        self.profiles = _table(PROFILE_HEADERS)
        header = self.profiles.horizontalHeader()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(PROFILE_HEADERS.index("Command"), QHeaderView.ResizeMode.Stretch)
        self.profiles.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.profiles.itemActivated.connect(self._start_current)
        self.no_profiles = QLabel("No profiles. “Always run in a jail…” (Ctrl+J) makes one from an application.")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(self.banner)
        for title, table, empty in (("&Jails", self.jails, self.no_jails),
                                    ("&Profiles", self.profiles, self.no_profiles)):
            box = QGroupBox(title)
            inner = QVBoxLayout(box)
            inner.addWidget(empty)
            inner.addWidget(table)
            layout.addWidget(box)
        self.setCentralWidget(central)
        self.setTabOrder(self.jails, self.profiles)
        self.statusBar().showMessage("starting…")
        self.resize(*DEFAULT_SIZE)
        geometry = settings.value(GEOMETRY_KEY)
        if geometry is not None:
            self.restoreGeometry(geometry)
        self._selection_changed()
        self.show_jails({})
        self.show_profiles({})

    def _action(self, text: str, icon: str, fallback: QStyle.StandardPixmap, shortcut, slot) -> QAction:
        action = QAction(themed(icon, fallback), text, self)
        action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        return action

    # -- what is shown -------------------------------------------------------

    def show_jails(self, jails: dict[str, dict], now: float | None = None) -> None:
        """The jails by reference, rates from the previous listing's counters; the selection kept."""
        now = time.monotonic() if now is None else now
        selected = self.selected_jail()
        rows = []
        for reference, jail in sorted(jails.items()):
            jail = normalised(jail)
            counters = jail["counters"]
            rate_in = rate_out = ""
            if (before := self._rates.get(reference)) is not None:
                elapsed = max(now - before[0], 1e-3)
                rate_in = rate((counters["rx_bytes"] - before[1]["rx_bytes"]) / elapsed)
                rate_out = rate((counters["tx_bytes"] - before[1]["tx_bytes"]) / elapsed)
            rows.append((reference, owner(jail["owner_uid"]), way_out(jail), condition(jail),
                         str(len(jail["pids"])), rate_in, rate_out, str(counters["dropped_packets"])))
            self._rates[reference] = (now, counters)
        for gone in set(self._rates) - set(jails):
            del self._rates[gone]
        _fill(self.jails, rows)
        for row, jail in enumerate(jail for _, jail in sorted(jails.items())):
            alarm = jail_state(jail) is not State.FINE
            self.jails.item(row, 3).setData(Qt.ItemDataRole.ForegroundRole, QColor(ALARM) if alarm else None)
        self.jails.setVisible(bool(rows))
        self.no_jails.setVisible(not rows)
        if selected in jails:
            self.jails.selectRow(sorted(jails).index(selected))

    def show_state(self, state: State, text: str) -> None:
        """The banner over the jails while a kill switch blocks or a tunnel is down."""
        self.banner.setText(text.replace("\n", "<br>"))
        self.banner.setStyleSheet(f"color: white; padding: 6px; font-weight: bold; {BANNERS.get(state, '')}")
        self.banner.setVisible(state is not State.FINE)

    def show_profiles(self, profiles: dict[str, Profile]) -> None:
        _fill(self.profiles, [(name, menu_way_out(profile), " ".join(profile.command), "")
                              for name, profile in profiles.items()])
        for row, name in enumerate(profiles):
            button = QPushButton(themed("media-playback-start", QStyle.StandardPixmap.SP_MediaPlay), "Start")
            button.setObjectName(f"start:{name}")
            button.setToolTip(f"Start profile {name} (Enter on its row)")
            button.clicked.connect(self._start_clicked)
            self.profiles.setCellWidget(row, 3, button)
        self.profiles.setVisible(bool(profiles))
        self.no_profiles.setVisible(not profiles)

    def show_status(self, text: str) -> None:
        self.statusBar().showMessage(text)

    def start_button(self, name: str) -> QPushButton:
        button = self.profiles.findChild(QPushButton, f"start:{name}")
        if button is None:
            raise LookupError(f"no Start button for profile {name}")
        return button

    def jail_names(self) -> list[str]:
        return [self.jails.item(row, 0).text() for row in range(self.jails.rowCount())]

    def jail_row(self, name: str) -> list[str]:
        row = self.jail_names().index(name)
        return [self.jails.item(row, column).text() for column in range(self.jails.columnCount())]

    def selected_jail(self) -> str | None:
        rows = self.jails.selectionModel().selectedRows()
        return self.jails.item(rows[0].row(), 0).text() if rows else None

    # -- what the user does --------------------------------------------------

    def _selection_changed(self) -> None:
        chosen = self.selected_jail() is not None
        self.inspect_action.setEnabled(chosen)
        self.stop_action.setEnabled(chosen)

    def _inspect(self) -> None:
        if (name := self.selected_jail()) is not None:
            self.inspect_jail.emit(name)

    def _stop(self) -> None:
        if (name := self.selected_jail()) is not None:
            self.stop_jail.emit(name)

    def _start_clicked(self) -> None:
        self.start_profile.emit(self.sender().objectName()[len("start:"):])

    def _start_current(self, item: QTableWidgetItem) -> None:
        self.start_profile.emit(self.profiles.item(item.row(), 0).text())

    def closeEvent(self, event: QCloseEvent) -> None:
        self.settings.setValue(GEOMETRY_KEY, self.saveGeometry())
        self.settings.sync()
        super().closeEvent(event)
        self.closed.emit()


def _table(headers: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    table.setTabKeyNavigation(False)
    return table


def _fill(table: QTableWidget, rows: list[tuple[str, ...]]) -> None:
    table.setRowCount(len(rows))
    for row, cells in enumerate(rows):
        for column, text in enumerate(cells):
            item = table.item(row, column)
            if item is None:
                table.setItem(row, column, QTableWidgetItem(text))
            elif item.text() != text:
                item.setText(text)
