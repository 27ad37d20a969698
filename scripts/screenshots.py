"""The user guide's pictures of the tray (docs/guide.md; the README shows the main window): its menu,
the run dialog, the inspector, the main window, the app picker and the icon's states, taken in the lab.

    sudo xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python scripts/screenshots.py [DIR]

Builds the lab, a private system bus with polkitd (this checkout's polkit
files installed for the while), and appjail-helper in the lab's host
namespace; through the tray (the window it shows where there is no system
tray) starts a --vpn jail that tries a few refused destinations and then
downloads at a steady pace, and a WireGuard profile (a tunnel jail of its
own); then saves DIR/tray-menu.png (the menu with profiles and jails),
DIR/run-dialog.png (a program with its own WireGuard tunnel) and
DIR/inspector.png (rates, totals, blocked destinations, connections) and
DIR/inspector-tunnel.png (the WireGuard jail's); and in DIR/screenshots/:
main-window.png (the jails and profiles), app-picker.png ("Always run in a
jail…" on this machine's applications, Firefox ESR picked) and state-icons.png (the icon when
all is fine, a tunnel is down, a kill switch blocks). DIR defaults to docs/.
Nothing of the machine's own network is touched; everything is removed at
the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from PyQt6.QtCore import QPoint, QSettings, Qt
from PyQt6.QtWidgets import QApplication, QGridLayout, QLabel, QWidget

from appjail.client import Client
from appjail.desktop.app_picker import AppPicker
from appjail.desktop.run_dialog import RunDialog
from appjail.desktop.state import State, state_icon
from appjail.desktop.tray import Tray
from appjail.desktop.worker import Session
from appjail.lab import Lab
from appjail.lab.bus import PrivateSystemBus, polkit_files_installed
from appjail.lab.helper import LabHelper
from appjail.lab.netns import in_netns
from appjail.profiles import Profile

REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 15
# refused on the way out (--deny 198.51.100.0/24, documentation addresses), for the inspector's blocked table
REFUSED = ("http://198.51.100.7:8080/", "https://198.51.100.42/", "http://198.51.100.9/")


def wait(app: QApplication, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    """Let the GUI run for SECONDS, or until UNTIL holds."""
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


def save(widget: QWidget, target: Path) -> None:
    if not widget.grab().save(str(target)):
        raise SystemExit(f"could not save {target}")
    print(f"saved {target} ({os.path.getsize(target)} bytes)")


def state_icons() -> QWidget:
    """The three icons side by side, each with what it means."""
    strip = QWidget()
    strip.setStyleSheet("background: white")
    grid = QGridLayout(strip)
    for column, (state, meaning) in enumerate(((State.FINE, "all jails fine"), (State.TUNNEL_DOWN, "a tunnel is down"),
                                               (State.BLOCKING, "a kill switch is blocking"))):
        icon = QLabel()
        icon.setPixmap(state_icon(state).pixmap(64, 64))
        icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        grid.addWidget(icon, 0, column)
        grid.addWidget(QLabel(meaning), 1, column, Qt.AlignmentFlag.AlignCenter)
    return strip


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs")
    (target / "screenshots").mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        lab = stack.enter_context(Lab(prefix="ajshot", wg_ifname="ajshot0"))
        stack.enter_context(polkit_files_installed(REPO / "polkit"))
        bus = stack.enter_context(PrivateSystemBus([REPO / "polkit" / "org.appjail.Helper1.conf"]))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        helper = LabHelper(lab.host_ns, bus.address, work / "run", work / "helper.log")
        stack.callback(helper.stop_and_clean)
        helper.start()
        wg_file = work / "wg-se1.conf"  # the tray reads it as its user: root here, whose file it is
        wg_file.write_text(lab.wg_peer("203.0.113.40"))
        wg_file.chmod(0o600)

        def download(rate: int) -> tuple[str, ...]:
            return ("curl", "-sS", "-o", "/dev/null", f"http://{lab.SERVER_ADDR}/bytes/50000000?rate={rate}")
        profiles = {
            "browser": Profile("browser", ("sh", "-c", "".join(f"curl -s -m 1 {url}; " for url in REFUSED)
                                           + " ".join(download(400_000))),
                               {"name": "browser", "vpn": lab.wg_ifname, "dns": [lab.DNS_ADDR],
                                "deny": ["198.51.100.0/24"]}),
            "mail": Profile("mail", download(20_000), {"name": "mail", "wireguard": str(wg_file)}),
            "web": Profile("web", ("python3", "-m", "http.server", "8080"),
                           {"name": "web", "publish": ["6000:8080"]}),
        }
        # the tray's process in the lab's host, as a user's is on its host: the helper answers no one elsewhere
        stack.enter_context(in_netns(lab.host_ns))
        app = QApplication(sys.argv)
        session = Session(env=[b"PATH=/usr/bin:/bin", b"HOME=/"], cwd=b"/", log_dir=None)
        tray = Tray(client_factory=lambda: Client(bus.address), session=session,
                    profiles_loader=lambda: profiles, use_tray=False,
                    settings=QSettings(str(work / "tray.conf"), QSettings.Format.IniFormat))
        stack.callback(tray.close)
        for name in ("browser", "mail"):
            tray.profile_action(name).trigger()
        wait(app, 15, lambda: {"browser", "mail"} <= set(tray.jails))

        window = tray.inspect("browser")
        window.resize(760, 760)
        wait(app, SETTLE_S)
        save(window, target / "inspector.png")
        print(f"the inspector showed {window.latest_rates()[0]:.0f} B/s in, {len(window.blocked_texts())} blocked")
        window.hide()
        tunnel_window = tray.inspect("mail")
        tunnel_window.resize(760, 460)
        wait(app, 5)
        save(tunnel_window, target / "inspector-tunnel.png")
        tunnel_window.hide()

        tray.window.resize(980, 560)
        tray.window.jails.selectRow(0)
        wait(app, 5)
        save(tray.window, target / "screenshots" / "main-window.png")

        picker = AppPicker([lab.host_uplink_if, lab.wg_ifname])
        picker.pick("firefox-esr.desktop")
        picker.way_out.vpn.setCurrentText(lab.wg_ifname)
        picker.way_out.dns.setText(lab.DNS_ADDR)
        picker.show()
        wait(app, 1)
        save(picker, target / "screenshots" / "app-picker.png")
        picker.close()

        strip = state_icons()
        strip.show()
        wait(app, 1)
        save(strip, target / "screenshots" / "state-icons.png")
        strip.close()

        tray.rebuild_menu()
        tray.menu.popup(QPoint(40, 40))
        wait(app, 1)
        save(tray.menu, target / "tray-menu.png")
        tray.menu.hide()

        dialog = RunDialog([lab.host_uplink_if, lab.wg_ifname])
        dialog.command.setText("thunderbird --new-instance -P work")
        dialog.name.setText("mail")
        dialog.tunnel.setCurrentText("WireGuard file")
        dialog.tunnel_file.setText("/home/alice/vpn/wg-se1.conf")
        dialog.resize(560, dialog.sizeHint().height())
        dialog.show()
        wait(app, 1)
        save(dialog, target / "run-dialog.png")
        dialog.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
