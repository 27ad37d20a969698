"""What the tray tells beyond the list: a jail's rules repaired after a host tool removed them, a VPN missing."""

from appjail.desktop.inspector import InspectorWindow

from .test_tunnels import tray_with  # noqa: F401

NAT_JAIL = {"name": "web", "owner_uid": 1000, "netns": "aj-web", "address": "10.231.0.2", "vpn": "",
            "dns": ["192.0.2.53"], "pids": [42], "counters": {}}



def test_the_tray_tells_when_a_jails_rules_were_repaired_and_the_inspector_shows_it(tray_with, qtbot):
    before = {**NAT_JAIL, "repairs": {"count": 0, "last": 0, "what": ""}}
    tray, _client = tray_with({}, [before])
    tray.on_jails({"web": before})
    what = "host firewall changed (nftables): rules of 1 jail(s) put back (web)"
    after = {**before, "repairs": {"count": 1, "last": 1700000000, "what": what}}
    tray.on_jails({"web": after})
    assert tray.notifications[-1] == ("Firewall changed", f"jail web: {what}. Its network is back; what it "
                                                          "must not reach stayed closed throughout")
    tray.on_jails({"web": after})
    assert len([n for n in tray.notifications if n[0] == "Firewall changed"]) == 1
    window = InspectorWindow("web")
    qtbot.addWidget(window)
    window.show_jail({**after, "connections": []})
    assert "rules repaired 1 time, last at " in window.summary.text() and what in window.summary.text()


def test_the_tray_tells_when_a_new_jails_vpn_does_not_exist(tray_with):
    tray, _client = tray_with({}, [])
    tray.on_jails({"web": {**NAT_JAIL, "vpn": "wg9", "vpn_up": False}})
    assert tray.notifications[-1] == ("VPN missing", "wg9 of the new jail web is down or does not exist: "
                                                     "the jail stays closed until it appears")
