"""The inspector window: one jail's rates over the last minute, totals, drops, what its rules
blocked, connections; a tunnel jail's tunnel instead of the last two (no firewall hook sees them)."""

from __future__ import annotations

import time
from collections import deque

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtWidgets import QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ..report import (BLOCKED_HEADERS, CONNECTIONS_CUT, NO_HOOK, blocked_rows, count, kill_switch_blocking, normalised,
                      repaired, size, tunnel_down, tunnel_line, tunnel_state)
from .rateplot import RatePlot
from .run_dialog import tunnel_label

HISTORY_S = 60
REFRESH_MS = 1000
CONNECTION_COLUMNS = ("proto", "direction", "dst", "dport", "state", "tx_bytes", "rx_bytes")
CONNECTION_HEADERS = ("Proto", "Dir", "Peer", "Port", "State", "Sent", "Received")


class InspectorWindow(QWidget):
    """Asks for the jail every second (wanted), draws what arrives (show)."""

    wanted = pyqtSignal(str)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.setWindowTitle(f"appjail: {name}")
        self.resize(640, 520)
        self.times: deque[float] = deque(maxlen=HISTORY_S)
        # a full minute from the start, so an idle jail's line never changes
        self.rates_in: deque[float] = deque([0.0] * HISTORY_S, maxlen=HISTORY_S)
        self.rates_out: deque[float] = deque([0.0] * HISTORY_S, maxlen=HISTORY_S)
        self._last: tuple[float, dict] | None = None
        self._drawn: tuple[list[float], list[float]] | None = None
        self._connections: list[dict] | None = None

        self.summary = QLabel("waiting for the helper…")
        self.warning = QLabel("")
        self.warning.setStyleSheet("color: white; background: #b00020; padding: 6px; font-weight: bold")
        self.warning.setWordWrap(True)
        self.warning.hide()
        self.plot = RatePlot(HISTORY_S)
        self.table = _table(CONNECTION_HEADERS)
        self.blocked = _table(BLOCKED_HEADERS)
        self._blocked: list[dict] | None = None
        self.blocked_label = QLabel("Blocked")
        self.no_hook = QLabel(NO_HOOK)
        self.no_hook.setWordWrap(True)
        self.no_hook.hide()
        self.connections_label = QLabel("Connections")
        self.firewall_views = (self.blocked_label, self.blocked, self.connections_label, self.table)
        layout = QVBoxLayout(self)
        for widget in (self.summary, self.warning, self.plot, self.no_hook, *self.firewall_views):
            layout.addWidget(widget)

        self.timer = QTimer(self)
        # a bound method, not a lambda: PyQt holds it weakly, so no reference
        # cycle keeps the window for the garbage collector to delete mid-event
        self.timer.timeout.connect(self._ask)
        self.timer.start(REFRESH_MS)

    def _ask(self) -> None:
        self.wanted.emit(self.name)

    def show_jail(self, jail: dict, now: float | None = None) -> None:
        jail = normalised(jail)
        now = time.monotonic() if now is None else now
        counters = jail["counters"]
        if self._last is not None:
            then, before = self._last
            elapsed = max(now - then, 1e-3)
            self.times.append(now)
            self.rates_in.append((counters["rx_bytes"] - before["rx_bytes"]) / elapsed)
            self.rates_out.append((counters["tx_bytes"] - before["tx_bytes"]) / elapsed)
            self._draw_rates()
        self._last = (now, counters)
        tunnel = jail["tunnel"]
        if tunnel:
            way_out = f"{tunnel_label(tunnel['type'])} tunnel ({tunnel_state(tunnel)})"
        elif jail["vpn"]:
            way_out = f"VPN {jail['vpn']} ({'up' if jail.get('vpn_up', True) else 'down'})"
        else:
            way_out = "no VPN (NAT)"
        self._set_text(self.summary,
            f"<b>{jail['name']}</b> · {jail['address']} · {way_out} · "
            f"{count(len(jail['pids']), 'process', 'processes')}<br>"
            + (f"tunnel: {tunnel_line(tunnel)}<br>" if tunnel else "") +
            f"since the jail started: in {size(counters['rx_bytes'])} ({counters['rx_packets']} packets) · "
            f"out {size(counters['tx_bytes'])} ({counters['tx_packets']} packets) · "
            f"dropped {counters['dropped_packets']} packets"
            + (f"<br>{repaired(jail['repairs'])}" if jail["repairs"]["count"] else ""))
        if kill_switch_blocking(jail):
            self._set_text(self.warning, f"Kill switch: {jail['vpn']} is down or missing. This jail's traffic "
                                 f"is blocked ({counters['dropped_packets']} packets dropped); nothing "
                                 "leaves it until the VPN is back.")
        elif tunnel and not tunnel["up"]:
            self._set_text(self.warning, tunnel_down(tunnel))
        self.warning.setVisible(kill_switch_blocking(jail) or bool(tunnel and not tunnel["up"]))
        self.no_hook.setVisible(bool(tunnel))
        for widget in self.firewall_views:
            widget.setVisible(not tunnel)
        self._set_text(self.connections_label,
                       f"Connections ({CONNECTIONS_CUT})" if jail.get("connections_cut") else "Connections")
        self._fill_table(jail.get("connections", []))
        self._fill_blocked(jail.get("blocked", []))

    def _draw_rates(self) -> None:
        """Redraw only when the picture changes: an idle jail's flat line stays as it is."""
        shown = (list(self.rates_in), list(self.rates_out))
        if shown == self._drawn:
            return
        self._drawn = shown
        self.plot.set_rates(*shown)

    @staticmethod
    def _set_text(label: QLabel, text: str) -> None:
        if label.text() != text:
            label.setText(text)

    def latest_rates(self) -> tuple[float, float]:
        """(in, out) bytes per second of the last sample; zeros before two samples."""
        return self.rates_in[-1], self.rates_out[-1]

    def _fill_blocked(self, blocked: list[dict]) -> None:
        """The destinations the jail's rules refused, most hit first (as `appjail inspect`)."""
        if blocked == self._blocked:
            return
        self._blocked = blocked
        self._set_text(self.blocked_label, f"Blocked ({len(blocked)})")
        _fill(self.blocked, blocked_rows(blocked))

    def blocked_texts(self) -> list[list[str]]:
        """The blocked table's cells, row by row."""
        return [[self.blocked.item(row, column).text() for column in range(self.blocked.columnCount())]
                for row in range(self.blocked.rowCount())]

    def _fill_table(self, connections: list[dict]) -> None:
        if connections == self._connections:
            return
        self._connections = connections
        _fill(self.table, [tuple(size(c.get(key, 0)) if key.endswith("_bytes") else str(c.get(key, ""))
                                 for key in CONNECTION_COLUMNS) for c in connections])


def _table(headers: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    return table


def _fill(table: QTableWidget, rows: list[tuple[str, ...]]) -> None:
    table.setRowCount(len(rows))
    for row, cells in enumerate(rows):
        for column, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(row, column, item)
    table.resizeColumnsToContents()
