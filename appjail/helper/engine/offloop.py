"""Work that may take seconds, done in a thread of its own, its outcome handed back to the GLib main loop.

The main loop answers every user of the helper: nothing on it may wait for
the network (a WireGuard endpoint's name) or for a process (a tunnel
daemon that takes its time to end). Such work runs here; `then(result,
error)` runs in the main loop once it is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from gi.repository import GLib

T = TypeVar("T")


def run(work: Callable[[], T], then: Callable[[T | None, BaseException | None], None], name: str) -> None:
    """work() in a daemon thread, then(its result, None) or then(None, what it raised) in the main loop."""
    def body() -> None:
        try:
            result, error = work(), None
        except Exception as exc:  # noqa: BLE001 - handed to then()
            result, error = None, exc

        def deliver() -> bool:
            then(result, error)
            return False
        GLib.idle_add(deliver)

    threading.Thread(target=body, name=name, daemon=True).start()
