""""Run a program…": a command, a VPN interface picked from the host's or a tunnel from a file, DNS servers
(the way-out rows, shared with the app picker)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import NamedTuple

from PyQt6.QtCore import QObject
from PyQt6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                             QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget)

from ..model import ValidationError, default_jail_name, parse_run_options

NO_VPN = "none (NAT through the host)"
NO_TUNNEL = "none"


class Tunnel(NamedTuple):
    """A kind of tunnel the dialog offers: a file option of model.OPTIONS, with its words for people."""

    key: str  # the run option, which is also the helper's tunnel "type"
    label: str  # in the dialog, the menu and the inspector
    files: str  # the file chooser's filter


# One entry per tunnel type; the chooser, the menu's labels and the inspector take them from here.
TUNNELS: tuple[Tunnel, ...] = (
    Tunnel("wireguard", "WireGuard", "WireGuard files (*.conf);;All files (*)"),
    Tunnel("openvpn", "OpenVPN", "OpenVPN files (*.ovpn *.conf);;All files (*)"),
)


def tunnel_label(key: str) -> str:
    """How the tray names a tunnel type ("wireguard" -> "WireGuard"); the key itself when unknown."""
    return next((tunnel.label for tunnel in TUNNELS if tunnel.key == key), key)


def profile_tunnel(options: dict) -> Tunnel | None:
    """The tunnel a profile's (or a dialog's) options ask for, if any."""
    return next((tunnel for tunnel in TUNNELS if tunnel.key in options), None)


def host_interfaces(sys_class_net: Path = Path("/sys/class/net")) -> list[str]:
    """Interfaces a jail could use as its VPN: everything but loopback and jails."""
    return sorted(name for name in os.listdir(sys_class_net) if name != "lo" and not name.startswith("aj-"))


class WayOutFields(QObject):
    """The rows of a form that choose a jail's way out: a VPN interface of the host's or a tunnel
    from a file, and DNS servers. The run dialog and the app picker share them."""

    def __init__(self, form: QFormLayout, interfaces: list[str], parent: QWidget) -> None:
        super().__init__(parent)
        self.parent_widget = parent
        self.vpn = QComboBox()
        self.vpn.addItems([NO_VPN, *interfaces])
        self.tunnel = QComboBox()
        self.tunnel.addItems([NO_TUNNEL, *(f"{tunnel.label} file" for tunnel in TUNNELS)])
        self.tunnel_file = QLineEdit()
        self.tunnel_file.setPlaceholderText("a file of yours, from your provider")
        self.choose = QPushButton("Choose…")
        self.choose.clicked.connect(self.choose_file)
        self.tunnel.currentIndexChanged.connect(self._tunnel_changed)
        tunnel_row = QHBoxLayout()
        for widget in (self.tunnel, self.tunnel_file, self.choose):
            tunnel_row.addWidget(widget)
        self.dns = QLineEdit()
        self.dns.setPlaceholderText("the host's upstream servers (or the tunnel file's)")
        form.addRow("&VPN interface", self.vpn)
        form.addRow(_buddy("Own &tunnel", self.tunnel), tunnel_row)
        form.addRow("&DNS servers", self.dns)
        self._tunnel_changed()

    def chosen_tunnel(self) -> Tunnel | None:
        index = self.tunnel.currentIndex()
        return TUNNELS[index - 1] if index > 0 else None

    def _tunnel_changed(self) -> None:
        """A tunnel is the jail's only way out: no VPN interface beside it, and a file to choose."""
        tunnel = self.chosen_tunnel()
        self.vpn.setEnabled(tunnel is None)
        if tunnel is not None:
            self.vpn.setCurrentText(NO_VPN)
        self.tunnel_file.setEnabled(tunnel is not None)
        self.choose.setEnabled(tunnel is not None)

    def choose_file(self) -> None:
        tunnel = self.chosen_tunnel()
        if tunnel is None:
            return
        start = self.tunnel_file.text() or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self.parent_widget, f"appjail: {tunnel.label} file", start,
                                              tunnel.files)
        if path:
            self.tunnel_file.setText(path)

    def options(self) -> dict:
        """The chosen way out as run options (unchecked); a tunnel's file goes as its path."""
        options: dict = {}
        tunnel = self.chosen_tunnel()
        if tunnel is not None:
            path = self.tunnel_file.text().strip()
            if not path:
                raise ValidationError(f"choose the {tunnel.label} file")
            options[tunnel.key] = path
        elif self.vpn.currentText() != NO_VPN:
            options["vpn"] = self.vpn.currentText()
        servers = [s for s in self.dns.text().replace(",", " ").split() if s]
        if servers:
            options["dns"] = servers
        return options


def _buddy(text: str, widget: QWidget) -> QLabel:
    """A label whose &-key focuses WIDGET (a form row holding a layout gets none by itself)."""
    label = QLabel(text)
    label.setBuddy(widget)
    return label


class RunDialog(QDialog):
    def __init__(self, interfaces: list[str], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("appjail: run a program")
        self.command = QLineEdit()
        self.command.setPlaceholderText("firefox --new-instance -P vpn")
        self.name = QLineEdit()
        self.name.setPlaceholderText("from the program's name")
        self.error = QLabel("")
        self.error.setStyleSheet("color: #b00020")
        form = QFormLayout()
        form.addRow("&Command", self.command)
        form.addRow("Jail &name", self.name)
        self.way_out = WayOutFields(form, interfaces, self)
        way = self.way_out
        self.vpn, self.tunnel, self.tunnel_file, self.choose, self.dns = (
            way.vpn, way.tunnel, way.tunnel_file, way.choose, way.dns)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.request: tuple[dict, list[str]] | None = None

    def accept(self) -> None:
        try:
            self.request = self.read()
        except ValidationError as exc:
            self.error.setText(str(exc))
            return
        super().accept()

    def read(self) -> tuple[dict, list[str]]:
        """(run options, command) from the fields; ValidationError names what is wrong.

        A tunnel's file goes as its path: the tray reads it as `appjail run` does, when it launches.
        """
        try:
            command = shlex.split(self.command.text())
        except ValueError as exc:
            raise ValidationError(f"cannot read the command: {exc}") from None
        if not command:
            raise ValidationError("enter the program to run")
        options = {"name": self.name.text().strip() or default_jail_name(command[0]), **self.way_out.options()}
        return parse_run_options(options), command
