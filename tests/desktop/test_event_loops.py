"""The test process's Qt application leaves GLib's default main context to the helper's loop."""

import threading

from gi.repository import GLib


def test_a_glib_loop_in_another_thread_still_runs_once_the_qt_application_exists(qapp):
    """The integration tests run the helper's main loop in a thread of the test process, after
    the desktop tests made the QApplication (firewalld's signals went unheard when it held it)."""
    fired = threading.Event()
    loop = GLib.MainLoop()
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        GLib.timeout_add(10, lambda: fired.set() or False)
        assert fired.wait(5), "GLib's default main context is held by the Qt application's thread"
    finally:
        loop.quit()
        runner.join(5)
