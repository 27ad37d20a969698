"""Screenshot of the tray's inspector during a download, for the README.

    sudo xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python scripts/inspector-screenshot.py [docs/inspector.png]

Builds the lab, a private system bus with polkitd (this checkout's polkit
files installed for the while), and appjail-helper in the lab's host
namespace; starts a paced download in a --vpn jail, opens the tray's
inspector on it, waits until a few seconds of rates are drawn, and saves
the window. Nothing of the machine's own network is touched; everything is
removed at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from PyQt6.QtWidgets import QApplication

from appjail.client import Client
from appjail.desktop.tray import Tray
from appjail.desktop.worker import Session
from appjail.lab import Lab
from appjail.lab.bus import PrivateSystemBus, polkit_files_installed
from appjail.lab.helper import LabHelper

REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 12


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "inspector.png")
    with ExitStack() as stack:
        lab = stack.enter_context(Lab(prefix="ajshot", wg_ifname="ajshot0"))
        stack.enter_context(polkit_files_installed(REPO / "polkit"))
        bus = stack.enter_context(PrivateSystemBus([REPO / "polkit" / "org.appjail.Helper1.conf"]))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        helper = LabHelper(lab.host_ns, bus.address, work / "run", work / "helper.log")
        stack.callback(helper.stop_and_clean)
        helper.start()

        app = QApplication(sys.argv)
        session = Session(env=[b"PATH=/usr/bin:/bin", b"HOME=/"], cwd=b"/", log_dir=None)
        tray = Tray(client_factory=lambda: Client(bus.address), session=session,
                    profiles_loader=dict, use_tray=False)
        stack.callback(tray.close)
        url = f"http://{lab.SERVER_ADDR}/bytes/50000000?rate=400000"
        tray.launch({"name": "browser", "vpn": lab.wg_ifname, "dns": [lab.DNS_ADDR]},
                    ["curl", "-sS", "-o", "/dev/null", url])
        deadline = time.monotonic() + 10
        while "browser" not in tray.jails and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.05)
        window = tray.inspect("browser")
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(target)):
            print(f"could not save {target}", file=sys.stderr)
            return 1
        print(f"saved {target} ({os.path.getsize(target)} bytes); the inspector showed "
              f"{window.latest_rates()[0]:.0f} B/s in")
    return 0


if __name__ == "__main__":
    sys.exit(main())
