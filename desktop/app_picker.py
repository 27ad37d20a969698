""""Always run in a jail…": the installed applications (their desktop entries, Flatpak's exports
included) with icons and a search field; picking one, with a way out, makes the profile and menu
entry that `appjail profiles add NAME --from APP [--replace]` makes (menuentries.add)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from PyQt6.QtCore import QSize, Qt
from PyQt6.QtGui import QIcon
from PyQt6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QListWidget,
                             QListWidgetItem, QStyle, QVBoxLayout)

from .. import menuentries
from ..cli import default_jail_name
from ..desktopentry import Application, installed_applications
from ..model import ValidationError
from .main_window import themed
from .run_dialog import WayOutFields

FALLBACK_ICON = "application-x-executable"


def app_icon(app: Application) -> QIcon:
    """The entry's icon: a file when it names one, else the theme's (a generic one when the theme has none)."""
    if app.icon.startswith("/"):
        return QIcon(app.icon)
    return QIcon.fromTheme(app.icon, themed(FALLBACK_ICON, QStyle.StandardPixmap.SP_FileIcon))


class AppPicker(QDialog):
    """Pick an application and its jail; accepting it writes the profile and entry (told: what was done)."""

    def __init__(self, interfaces: list[str], env: Mapping[str, str] = os.environ, parent=None) -> None:
        super().__init__(parent)
        self.env = env
        self.setWindowTitle("appjail: always run an application in a jail")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search applications")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.filter)
        self.apps = QListWidget()
        self.apps.setIconSize(QSize(24, 24))
        for app in installed_applications(env, skip=menuentries.is_ours):
            item = QListWidgetItem(app_icon(app), app.name)
            item.setData(Qt.ItemDataRole.UserRole, app)
            item.setToolTip(f"{app.desktop_id}  ({app.path})")
            self.apps.addItem(item)
        self.apps.currentItemChanged.connect(self._picked)
        self.name = QLineEdit()
        self.name.setPlaceholderText("from the application's ID")
        self.replace = QCheckBox("Also &replace its own menu item and default-program role")
        self.replace.setToolTip("The usual menu item, and opening its links and files, start it jailed "
                                "until the profile is removed")
        form = QFormLayout()
        form.addRow("&Profile name", self.name)
        self.way_out = WayOutFields(form, interfaces, self)
        form.addRow("", self.replace)
        self.error = QLabel("")
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (self.search, self.apps):
            layout.addWidget(widget)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.setTabOrder(self.search, self.apps)
        self.told: list[str] = []
        self.resize(520, 600)

    def listed(self) -> list[str]:
        """The names shown (the search applied)."""
        return [self.apps.item(row).text() for row in range(self.apps.count()) if not self.apps.item(row).isHidden()]

    def filter(self, text: str) -> None:
        """Show the applications whose name or ID holds the text; the first of them is picked."""
        wanted = text.strip().casefold()
        first = None
        for row in range(self.apps.count()):
            item = self.apps.item(row)
            app: Application = item.data(Qt.ItemDataRole.UserRole)
            hidden = wanted not in app.name.casefold() and wanted not in app.desktop_id.casefold()
            item.setHidden(hidden)
            first = first or (None if hidden else item)
        if first is not None and (self.apps.currentItem() is None or self.apps.currentItem().isHidden()):
            self.apps.setCurrentItem(first)

    def pick(self, desktop_id: str) -> None:
        (item,) = [self.apps.item(row) for row in range(self.apps.count())
                   if self.apps.item(row).data(Qt.ItemDataRole.UserRole).desktop_id == desktop_id]
        self.apps.setCurrentItem(item)

    def _picked(self, current: QListWidgetItem | None) -> None:
        if current is not None:
            app: Application = current.data(Qt.ItemDataRole.UserRole)
            self.name.setPlaceholderText(default_jail_name(app.desktop_id.removesuffix(".desktop").split(".")[-1]))

    def accept(self) -> None:
        try:
            self.told = self.add()
        except ValidationError as exc:
            self.error.setText(str(exc))
            return
        super().accept()

    def add(self) -> list[str]:
        """menuentries.add for the picked application, as `profiles add NAME --from ID` would do it."""
        item = self.apps.currentItem()
        if item is None or item.isHidden():
            raise ValidationError("pick an application")
        app: Application = item.data(Qt.ItemDataRole.UserRole)
        name = self.name.text().strip() or self.name.placeholderText()
        return menuentries.add(name, app.desktop_id, self.way_out.options(), self.replace.isChecked(), self.env)
