"""Every desktop test keeps its settings (the main window's size) in a directory of its own."""

import pytest
from PyQt6.QtCore import QSettings


@pytest.fixture(autouse=True)
def own_settings(tmp_path, monkeypatch):
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
