"""What `appjail ls` and `appjail inspect` print of a tunnel jail's tunnel."""

from __future__ import annotations

import os

from appjail import report

NOW = 1_700_000_000.0


def tunnel_jail(state: str = "up", handshake_age: float | None = 5, link_up: bool = True, now: float = NOW) -> dict:
    """A tunnel jail as the helper's Inspect answers it (the bus leaves out vpn, a null)."""
    up = state != "down"
    return {"name": "wga", "owner_uid": os.getuid(), "netns": "aj-wga", "address": "203.0.113.10",
            "dns": ["192.0.2.53"], "pids": [42], "keep": True, "vpn_up": up,
            "counters": {"tx_bytes": 700, "rx_bytes": 5000, "tx_packets": 7, "rx_packets": 9},
            "tunnel": {"type": "wireguard", "implementation": "wireguard-go", "endpoint": "198.51.100.1:51820",
                       "peer": "PEERKEY=", "addresses": ["203.0.113.10/32"],
                       "latest_handshake": int(now - handshake_age) if handshake_age is not None else 0,
                       "rx_bytes": 3 * 1024 * 1024, "tx_bytes": 2048, "link_up": link_up, "state": state,
                       "up": up},
            "blocked": [], "connections": []}


def test_inspect_shows_the_tunnel_line_instead_of_a_vpn():
    page = report.inspection(tunnel_jail(), now=NOW)
    assert ("tunnel    wireguard to 198.51.100.1:51820, up, handshake 5 s ago, received 3.0 MiB, sent 2.0 KiB"
            in page.splitlines())
    assert "vpn " not in page and "TUNNEL DOWN" not in page
    assert page.splitlines()[-1] == report.NO_HOOK, "no empty connections table that could not be filled"


def test_a_tunnel_down_is_said_in_its_line_and_explained():
    page = report.inspection(tunnel_jail("down", handshake_age=400), now=NOW).splitlines()
    assert "tunnel    wireguard to 198.51.100.1:51820, TUNNEL DOWN, handshake 6 min ago, received 3.0 MiB, " \
           "sent 2.0 KiB" in page
    (warning,) = [line for line in page if line.startswith("TUNNEL DOWN:")]
    assert "198.51.100.1:51820 does not answer its handshakes" in warning and "nothing leaks" in warning
    down = report.inspection(tunnel_jail("down", handshake_age=None, link_up=False), now=NOW)
    assert "TUNNEL DOWN, no handshake yet" in down and "TUNNEL DOWN: its interface is down" in down


def test_ls_names_the_tunnel_in_the_vpn_column_and_gives_its_line_below():
    nat = {"name": "web", "owner_uid": os.getuid(), "netns": "aj-web", "address": "10.231.0.2", "pids": []}
    lines = report.jail_list([nat, tunnel_jail(), {**tunnel_jail("down", handshake_age=7200), "name": "wgb"},
                              {**tunnel_jail("idle", handshake_age=7200), "name": "wgc"}],
                             now=NOW).splitlines()
    header = lines[0].split()
    column = header.index("VPN")
    assert [line.split()[column] for line in lines[1:5]] == ["-", "wireguard", "wireguard", "wireguard"]
    assert [line.split()[column + 1] for line in lines[2:5]] == ["1", "DOWN", "IDLE"]
    assert lines[5:] == ["", "wga: tunnel wireguard to 198.51.100.1:51820, up, handshake 5 s ago, "
                             "received 3.0 MiB, sent 2.0 KiB",
                         "wgb: tunnel wireguard to 198.51.100.1:51820, TUNNEL DOWN, handshake 2 h ago, "
                         "received 3.0 MiB, sent 2.0 KiB",
                         "wgc: tunnel wireguard to 198.51.100.1:51820, idle, handshake 2 h ago, "
                         "received 3.0 MiB, sent 2.0 KiB"]


def test_an_idle_tunnel_is_no_alarm():
    page = report.inspection(tunnel_jail("idle", handshake_age=400), now=NOW)
    assert "wireguard to 198.51.100.1:51820, idle, handshake 6 min ago" in page and "DOWN" not in page


def test_a_helper_that_sends_only_up_is_still_read():
    old = tunnel_jail("down", handshake_age=400)
    del old["tunnel"]["state"]
    assert "TUNNEL DOWN, handshake 6 min ago" in report.inspection(old, now=NOW)


def test_a_nat_jails_pages_are_unchanged_by_tunnels():
    nat = {"name": "web", "owner_uid": os.getuid(), "netns": "aj-web", "address": "10.231.0.2", "pids": [],
           "connections": []}
    assert "tunnel" not in report.jail_list([nat])
    page = report.inspection(nat)
    assert "vpn       none (NAT through the host)" in page and "connections (0)" in page
    assert report.normalised(nat)["tunnel"] is None, "--json has the key, null without a tunnel"


def test_an_openvpn_jail_still_connecting_says_so_not_down():
    connecting = {**tunnel_jail(state="down", link_up=False), "name": "ova", "address": "-", "pids": [],
                  "tunnel": {"type": "openvpn", "endpoint": "198.51.100.1:1194/udp", "addresses": [],
                             "connected_to": "", "connected_since": 0, "rx_bytes": 0, "tx_bytes": 0,
                             "daemon": "running", "link_up": False, "state": "connecting", "up": False}}
    lines = report.jail_list([connecting], now=NOW).splitlines()
    assert lines[1].split()[3:5] == ["openvpn", "CONNECTING"]
    assert lines[-1] == ("ova: tunnel openvpn to 198.51.100.1:1194/udp, connecting, not connected, "
                         "received 0 B, sent 0 B")
    page = report.inspection(connecting, now=NOW)
    assert "TUNNEL DOWN" not in page and "CONNECTING: openvpn has not connected yet" in page


def test_ports_an_adopted_jail_could_not_hold_again_are_named_by_inspect_and_ls():
    nat = {"name": "web", "owner_uid": os.getuid(), "netns": "aj-web", "address": "10.231.0.2", "pids": [],
           "publish": ["6000:8080/tcp", "6001:8081/tcp"], "ports_not_held": ["6001:8081/tcp"],
           "blocked": [], "connections": []}
    warning = ("PORTS NOT HELD: 6001:8081/tcp: the restarted helper could not bind them again (the helper's "
               "log says why: usually a program on the host took them meanwhile); the jail still gets their "
               "traffic from other machines, such a program the host's own (loopback)")
    assert warning in report.inspection(nat).splitlines()
    assert report.jail_list([nat]).splitlines()[2:] == ["", f"web: {warning}"]
    assert "NOT HELD" not in report.inspection({**nat, "ports_not_held": []})


def test_a_repaired_jail_says_so_in_inspect_and_ls():
    what = "host firewall changed (nftables): rules of 1 jail(s) put back (web)"
    nat = {"name": "web", "owner_uid": os.getuid(), "netns": "aj-web", "address": "10.231.0.2", "pids": [],
           "repairs": {"count": 2, "last": 1700000000, "what": what}, "blocked": [], "connections": []}
    line = (f"rules repaired 2 times, last at {report.clock(1700000000)} ({what}); "
            "the jail's own refusals held throughout")
    assert line in report.inspection(nat).splitlines()
    assert report.jail_list([nat]).splitlines()[2:] == ["", f"web: {line}"]
    assert "repaired" not in report.inspection({**nat, "repairs": report.NO_REPAIRS})
    assert report.normalised({"name": "old"})["repairs"] == report.NO_REPAIRS


def test_ls_names_a_declared_jails_file_and_json_always_has_the_field():
    declared = {"name": "seedbox", "owner_uid": 0, "netns": "aj-seedbox", "address": "10.231.0.2", "pids": [],
                "source": "/etc/appjail/jails.d/seedbox.toml"}
    assert report.jail_list([declared]).splitlines()[2:] == [
        "", "seedbox: declared in /etc/appjail/jails.d/seedbox.toml"]
    assert report.normalised({**declared, "source": None})["source"] is None
    assert report.normalised({k: v for k, v in declared.items() if k != "source"})["source"] is None


def test_the_forwarded_port_line_says_the_port_and_its_lease_or_why_there_is_none():
    status = {"method": "natpmp", "gateway": "10.2.0.1", "state": "mapped", "port": 51803,
              "expires": 1_700_000_060, "renewals": 1, "error": ""}
    assert report.forwarded(status) == (f"port 51803 (natpmp from 10.2.0.1, lease until "
                                        f"{report.clock(1_700_000_060)}, renewed 1 time)")
    assert report.forwarded({**status, "state": "mapping", "port": 0, "gateway": "", "error": "no answer"}) == \
        "none yet (natpmp from no gateway: no answer)"
    assert report.forwarded({**status, "state": "lost", "port": 0, "error": "no answer from the gateway"}) == \
        "PORT LOST (natpmp from 10.2.0.1: no answer from the gateway); asking again"
