"""scripts/test's later passes leave once_per_run tests out of collection (deselected, never skipped:
a skipped integration test fails a CI run)."""

from types import SimpleNamespace

from tests import conftest


class Item:
    def __init__(self, name: str, once: bool) -> None:
        self.name, self.once = name, once

    def get_closest_marker(self, name: str):
        return object() if name == "once_per_run" and self.once else None


def collect(monkeypatch, done: bool) -> tuple[list[str], list[str]]:
    deselected: list[str] = []
    hook = SimpleNamespace(pytest_deselected=lambda items: deselected.extend(item.name for item in items))
    config = SimpleNamespace(hook=hook)
    items = [Item("slow", True), Item("fast", False)]
    monkeypatch.setattr(conftest, "ONCE_PER_RUN_DONE", done)
    conftest.pytest_collection_modifyitems(config, items)
    return [item.name for item in items], deselected


def test_the_first_pass_runs_them(monkeypatch):
    assert collect(monkeypatch, done=False) == (["slow", "fast"], [])


def test_later_passes_deselect_them(monkeypatch):
    assert collect(monkeypatch, done=True) == (["fast"], ["slow"])
