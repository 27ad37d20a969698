""""Run a program…": a command, a VPN interface picked from the host's, DNS servers."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from PyQt6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit,
                             QVBoxLayout)

from ..cli import default_jail_name
from ..model import ValidationError, parse_run_options

NO_VPN = "none (NAT through the host)"


def host_interfaces(sys_class_net: Path = Path("/sys/class/net")) -> list[str]:
    """Interfaces a jail could use as its VPN: everything but loopback and jails."""
    return sorted(name for name in os.listdir(sys_class_net) if name != "lo" and not name.startswith("aj-"))


class RunDialog(QDialog):
    def __init__(self, interfaces: list[str], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("appjail: run a program")
        self.command = QLineEdit()
        self.command.setPlaceholderText("firefox --new-instance -P vpn")
        self.name = QLineEdit()
        self.name.setPlaceholderText("from the program's name")
        self.vpn = QComboBox()
        self.vpn.addItems([NO_VPN, *interfaces])
        self.dns = QLineEdit()
        self.dns.setPlaceholderText("the host's upstream servers")
        self.error = QLabel("")
        self.error.setStyleSheet("color: #b00020")
        form = QFormLayout()
        form.addRow("Command", self.command)
        form.addRow("Jail name", self.name)
        form.addRow("VPN interface", self.vpn)
        form.addRow("DNS servers", self.dns)
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
        """(run options, command) from the fields; ValidationError names what is wrong."""
        try:
            command = shlex.split(self.command.text())
        except ValueError as exc:
            raise ValidationError(f"cannot read the command: {exc}") from None
        if not command:
            raise ValidationError("enter the program to run")
        options: dict = {"name": self.name.text().strip() or default_jail_name(command[0])}
        if self.vpn.currentText() != NO_VPN:
            options["vpn"] = self.vpn.currentText()
        servers = [s for s in self.dns.text().replace(",", " ").split() if s]
        if servers:
            options["dns"] = servers
        return parse_run_options(options), command
