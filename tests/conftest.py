"""Suite-wide rules: where integration tests are required, skipping one fails the run.
Qt draws offscreen: the tests need no display. The firewall backend is APPJAIL_FIREWALL's.
Tests marked once_per_run are not collected where APPJAIL_ONCE_PER_RUN_DONE=1: scripts/test
sets it for its passes after the first (deselected, so not a skip that fails the run)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# one firewall backend per run (scripts/test runs both); engines and lab helpers inherit it
os.environ.setdefault("APPJAIL_FIREWALL", "nftables")

REQUIRED = os.environ.get("APPJAIL_REQUIRE_INTEGRATION") == "1"
ONCE_PER_RUN_DONE = os.environ.get("APPJAIL_ONCE_PER_RUN_DONE") == "1"
_skipped: list[str] = []


@pytest.fixture(scope="session")
def qapp_cls():
    """pytest-qt's QApplication on Qt's own event dispatcher, not GLib's. With GLib's, the test
    process's main thread owns GLib's default main context from then on, and a helper's main loop
    run in another thread of the same process (coexist_engine's) never dispatches again: firewalld's
    signals went unheard. The tray and the helper never share a process outside the tests."""
    from PyQt6.QtWidgets import QApplication

    class OwnDispatcherApplication(QApplication):
        def __init__(self, argv: list[str]) -> None:
            before = os.environ.get("QT_NO_GLIB")
            os.environ["QT_NO_GLIB"] = "1"  # read by the constructor only
            try:
                super().__init__(argv)
            finally:
                if before is None:
                    del os.environ["QT_NO_GLIB"]
                else:
                    os.environ["QT_NO_GLIB"] = before

    return OwnDispatcherApplication


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ONCE_PER_RUN_DONE:
        done = [item for item in items if item.get_closest_marker("once_per_run")]
        if done:
            config.hook.pytest_deselected(items=done)
            items[:] = [item for item in items if item not in done]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "integration" in report.keywords:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRED and _skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter) -> None:
    if REQUIRED and _skipped:
        terminalreporter.write_line(
            f"FAILED: {len(_skipped)} integration test(s) skipped while "
            "APPJAIL_REQUIRE_INTEGRATION=1: " + ", ".join(_skipped), red=True)
