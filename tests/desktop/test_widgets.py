"""The tray's widgets on their own (pytest-qt, offscreen): no helper needed."""

import pytest

from appjail.desktop.inspector import InspectorWindow
from appjail.desktop.run_dialog import NO_VPN, RunDialog, host_interfaces
from appjail.model import ValidationError


def jail(rx: int, tx: int, dropped: int = 0, vpn_up: bool = True, connections=()) -> dict:
    return {"name": "web", "owner_uid": 1000, "netns": "aj-web", "address": "10.231.0.2",
            "vpn": "wg0", "vpn_up": vpn_up, "dns": ["192.0.2.53"], "pids": [42],
            "counters": {"rx_bytes": rx, "tx_bytes": tx, "rx_packets": 1, "tx_packets": 1,
                         "dropped_packets": dropped, "dropped_bytes": 0},
            "connections": list(connections)}


def test_inspector_plots_rates_and_lists_connections(qtbot):
    window = InspectorWindow("web")
    qtbot.addWidget(window)
    window.show_jail(jail(1000, 100), now=10.0)
    assert window.latest_rates() == (0.0, 0.0)
    connection = {"proto": "tcp", "direction": "out", "dst": "192.0.2.80", "dport": 80,
                  "state": "ESTABLISHED", "tx_bytes": 70, "rx_bytes": 4096}
    window.show_jail(jail(5000, 300, connections=[connection]), now=12.0)
    assert window.latest_rates() == (2000.0, 100.0)
    assert [window.table.item(0, c).text() for c in range(7)] == [
        "tcp", "out", "192.0.2.80", "80", "ESTABLISHED", "70 B", "4.0 KiB"]
    assert window.warning.isHidden()
    assert window.connections_label.text() == "Connections"
    window.show_jail({**jail(5000, 300, connections=[connection]), "connections_cut": True}, now=13.0)
    assert window.connections_label.text() == "Connections (cut short: more than inspect reads at once)"


def test_inspector_warns_when_the_kill_switch_blocks(qtbot):
    window = InspectorWindow("web")
    qtbot.addWidget(window)
    window.show_jail(jail(0, 0, dropped=7, vpn_up=False))
    assert not window.warning.isHidden() and "Kill switch: wg0" in window.warning.text()
    assert "7 packets dropped" in window.warning.text()


def test_inspector_asks_for_its_jail_every_second(qtbot):
    window = InspectorWindow("web")
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.wanted, timeout=3000) as blocker:
        pass
    assert blocker.args == ["web"]


def test_run_dialog_builds_a_run_request(qtbot):
    dialog = RunDialog(["wg0", "eth0"])
    qtbot.addWidget(dialog)
    dialog.command.setText("firefox --new-instance -P 'my vpn'")
    dialog.vpn.setCurrentText("wg0")
    dialog.dns.setText("192.0.2.53, 192.0.2.54")
    assert dialog.read() == ({"name": "firefox", "vpn": "wg0", "dns": ["192.0.2.53", "192.0.2.54"]},
                             ["firefox", "--new-instance", "-P", "my vpn"])
    dialog.vpn.setCurrentText(NO_VPN)
    dialog.dns.setText("300.1.1.1")
    with pytest.raises(ValidationError, match="invalid DNS server"):
        dialog.read()
    dialog.accept()
    assert dialog.result() == 0 and "invalid DNS server" in dialog.error.text()


def test_vpn_choices_are_the_hosts_interfaces_but_loopback_and_jails(tmp_path):
    for name in ("lo", "eth0", "wg0", "aj-web"):
        (tmp_path / name).mkdir()
    assert host_interfaces(tmp_path) == ["eth0", "wg0"]


def test_rate_plot_draws_both_lines_scaled_to_the_highest_rate(qtbot):
    from PyQt6.QtGui import QColor

    from appjail.desktop.rateplot import LINES, RatePlot

    plot = RatePlot(60)
    qtbot.addWidget(plot)
    plot.resize(400, 200)
    assert plot.top() == 1000.0  # idle: a flat line at the bottom, not a line scaled to nothing
    plot.set_rates([0.0] * 59 + [50_000.0], [20_000.0] * 60)
    assert plot.top() == 50_000.0 and plot.axis_label() == "50.0 kB/s"
    image = plot.grab().toImage()
    colours = {image.pixelColor(x, y).name() for x in range(image.width()) for y in range(image.height())}
    assert {colour.name() for _, colour in LINES} <= colours
    assert QColor("white").name() in colours
