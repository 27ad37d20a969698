"""What the unit tests share besides the fakes: tunnel files, openvpn's report, the main loop run."""

from __future__ import annotations

import time

from gi.repository import GLib

from ..ovpnfiles import client

DNS = ("192.0.2.53",)
OWNER = 1000

WG_KEY = "A" * 43 + "="
WG_FILE = f"""[Interface]
PrivateKey = {WG_KEY}
Address = 10.66.0.2/32
DNS = 10.66.0.1
[Peer]
PublicKey = {"B" * 43 + "="}
Endpoint = 198.51.100.1:51820
AllowedIPs = 0.0.0.0/0
"""

OVPN_FILE = client("client", "dev tun", "proto udp", "remote 198.51.100.1 1194", "nobind", "remote-cert-tls server")
PUSHED = {"ifconfig_local": "203.0.113.130", "ifconfig_netmask": "255.255.255.192", "tun_mtu": "1500",
          "foreign_option_1": "dhcp-option DNS 192.0.2.53", "trusted_ip": "198.51.100.1", "trusted_port": "1194"}


def wg_config():
    from appjail.wgconf import parse
    return parse(WG_FILE)


def ovpn_config():
    from appjail.ovpnconf import parse
    return parse(OVPN_FILE)


def loop_until(done, timeout: float = 2.0) -> None:
    """Run the main loop's events (the helper's, here) until done() or the timeout."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        GLib.MainContext.default().iteration(False)
        time.sleep(0.005)
