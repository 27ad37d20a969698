"""The jails' state at a glance, from what `ls` reports: each jail's (fine, its kill switch blocking,
its tunnel down), the worst of them for the tray's icon and tooltip, and the icon for each.

A --vpn jail whose interface is missing or down (`vpn_up` false) is blocked by its kill switch; a
tunnel jail whose tunnel is down (`tunnel.state`, report.tunnel_state) has no way out. Both are the
jail refusing to leak, but its programs get nothing through, so the icon says so.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path

from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QFont, QIcon, QPainter, QPen

from ..report import kill_switch_blocking, normalised, tunnel_state
from .run_dialog import tunnel_label

ICON = Path(__file__).with_name("appjail.svg")
ICON_SIZE = 64
# The badge of appjail.svg (its green tick), redrawn for the states that are not fine.
BADGE_CENTRE, BADGE_RADIUS = QPointF(50, 46), 11


class State(IntEnum):
    """Worse states are larger: the icon shows the worst jail's."""

    FINE = 0
    TUNNEL_DOWN = 1
    BLOCKING = 2


BADGES = {State.TUNNEL_DOWN: QColor("#ef6c00"), State.BLOCKING: QColor("#c62828")}


def jail_state(jail: dict) -> State:
    jail = normalised(jail)
    if kill_switch_blocking(jail):
        return State.BLOCKING
    if jail["tunnel"] and tunnel_state(jail["tunnel"]) == "down":
        return State.TUNNEL_DOWN
    return State.FINE


def way_out(jail: dict) -> str:
    """The main window's column: NAT, VPN wg0, WireGuard tunnel."""
    jail = normalised(jail)
    if jail["tunnel"]:
        return f"{tunnel_label(jail['tunnel']['type'])} tunnel"
    return f"VPN {jail['vpn']}" if jail["vpn"] else "NAT"


def condition(jail: dict) -> str:
    """The jail's state in a few words: `kill switch blocking (wg0 down or missing)`, `tunnel down`,
    `tunnel idle`, `VPN up`, `fine`; with a note when its rules were repaired."""
    jail = normalised(jail)
    state = jail_state(jail)
    if state is State.BLOCKING:
        text = f"kill switch blocking ({jail['vpn']} down or missing)"
    elif jail["tunnel"]:
        text = f"tunnel {tunnel_state(jail['tunnel'])}"
    else:
        text = "VPN up" if jail["vpn"] else "fine"
    repairs = jail["repairs"]["count"]
    return text + (f"; rules repaired {repairs}×" if repairs else "")


def overall(jails: dict[str, dict]) -> tuple[State, str]:
    """The worst state of the jails (named as the helper knows them) and the tooltip saying which."""
    states = {name: jail_state(jail) for name, jail in jails.items()}
    worst = max(states.values(), default=State.FINE)
    if not jails:
        return worst, "appjail: no jails"
    if worst is State.FINE:
        return worst, f"appjail: {len(jails)} jail{'s' if len(jails) != 1 else ''}, all fine"
    lines = [f"{name}: {condition(jails[name])}" for name, state in sorted(states.items()) if state]
    heading = "a kill switch is blocking" if worst is State.BLOCKING else "a tunnel is down"
    return worst, "\n".join([f"appjail: {heading}", *lines])


def state_icon(state: State) -> QIcon:
    """appjail's icon with the state's badge: the tick when fine, an orange or red `!` otherwise."""
    base = QIcon(str(ICON))
    if state is State.FINE:
        return base
    pixmap = base.pixmap(ICON_SIZE, ICON_SIZE)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor("white"), 2))
    painter.setBrush(BADGES[state])
    painter.drawEllipse(BADGE_CENTRE, BADGE_RADIUS, BADGE_RADIUS)
    font = QFont()
    font.setBold(True)
    font.setPixelSize(16)
    painter.setFont(font)
    box = QRectF(BADGE_CENTRE.x() - BADGE_RADIUS, BADGE_CENTRE.y() - BADGE_RADIUS, 2 * BADGE_RADIUS, 2 * BADGE_RADIUS)
    painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "!")
    painter.end()
    return QIcon(pixmap)
