"""The wg-quick file parser: every field checked, every mistake one sentence naming its line."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from appjail.model import ValidationError
from appjail.wgconf import parse, resolve_endpoints

KEY = base64.b64encode(bytes(range(32))).decode()
PEER = base64.b64encode(bytes(range(1, 33))).decode()
PSK = base64.b64encode(bytes(range(2, 34))).decode()

GOOD = f"""\
# a provider's file
[Interface]
PrivateKey = {KEY}
Address = 10.66.0.2/32, fd00:66::2/128
DNS = 10.66.0.1
MTU = 1380

[Peer]
PublicKey = {PEER}
PresharedKey = {PSK}
Endpoint = vpn.example.net:51820
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
"""


def test_every_field_is_read():
    config = parse(GOOD)
    assert config.private_key == KEY and config.mtu == 1380 and config.dns == ("10.66.0.1",)
    assert [str(a) for a in config.addresses] == ["10.66.0.2/32", "fd00:66::2/128"] and config.ipv6
    (peer,) = config.peers
    assert (peer.public_key, peer.preshared_key, peer.keepalive) == (PEER, PSK, 25)
    assert (peer.endpoint.host, peer.endpoint.port, peer.endpoint.line) == ("vpn.example.net", 51820, 11)
    assert [str(r) for r in config.routes()] == ["0.0.0.0/0", "::/0"]


def test_ipv6_stays_off_without_an_ipv6_address():
    config = parse(GOOD.replace(", fd00:66::2/128", ""))
    assert not config.ipv6 and config.routes() == [ipaddress.ip_network("0.0.0.0/0")]


def test_the_summary_holds_no_secret_and_setconf_holds_both_keys():
    config = resolve_endpoints(parse(GOOD), lambda host, port: ["198.51.100.1"])
    shown = repr(config.summary())
    assert KEY not in shown and PSK not in shown and "198.51.100.1:51820" in shown
    text = config.setconf_text()
    assert f"PrivateKey = {KEY}" in text and f"PresharedKey = {PSK}" in text
    assert "Endpoint = 198.51.100.1:51820" in text and "Address" not in text and "DNS" not in text


@pytest.mark.parametrize("change, message", [
    ((f"PrivateKey = {KEY}\n", ""), r"^WireGuard file, line 2: \[Interface\] has no PrivateKey$"),
    ((f"PrivateKey = {KEY}", "PrivateKey = " + base64.b64encode(bytes(31)).decode()),
     r"^WireGuard file, line 3: PrivateKey has 31 bytes, a WireGuard key has 32$"),
    ((f"PublicKey = {PEER}", "PublicKey = not*base64"), r"^WireGuard file, line 9: PublicKey is not base64$"),
    (("[Peer]", "[Peers]"), r"^WireGuard file, line 8: unknown section '\[Peers\]'"),
    (("MTU = 1380", "PostUp = iptables -F"), r"^WireGuard file, line 6: unknown key 'PostUp' in \[Interface\]$"),
    (("MTU = 1380", "MTU = 100"), r"^WireGuard file, line 6: MTU '100' is not a number from 1280 to 9000$"),
    (("Endpoint = vpn.example.net:51820", "Endpoint = vpn.example.net"), r"^WireGuard file, line 11: Endpoint .* is not HOST:PORT$"),
    (("Endpoint = vpn.example.net:51820", "Endpoint = a b:1"), r"^WireGuard file, line 11: Endpoint .* neither a host name"),
    (("Endpoint = vpn.example.net:51820", "Endpoint = x:70000"), r"^WireGuard file, line 11: Endpoint port '70000'"),
    (("AllowedIPs = 0.0.0.0/0, ::/0", "AllowedIPs = everything"), r"^WireGuard file, line 12: AllowedIPs 'everything'"),
    (("Address = 10.66.0.2/32", "Address = 127.0.0.1/8"), r"^WireGuard file, line 4: Address 127.0.0.1/8 cannot be"),
    (("DNS = 10.66.0.1", "DNS = example.org"), r"^WireGuard file, line 5: DNS 'example.org' is not an IPv4 address"),
    (("DNS = 10.66.0.1", "DNS = 10.66.0.1\nDNS = 10.66.0.1"), None),  # repeats are fine
    (("MTU = 1380", "MTU = 1380\nMTU = 1400"), r"^WireGuard file, line 7: MTU is given twice in one section$"),
    (("PersistentKeepalive = 25", "PersistentKeepalive = -1"), r"^WireGuard file, line 13: PersistentKeepalive '-1'"),
    (("# a provider's file\n", "Address = 10.0.0.1/32\n"), r"^WireGuard file, line 1: Address comes before any"),
    (("Address = 10.66.0.2/32", "Address 10.66.0.2/32"), r"^WireGuard file, line 4: expected KEY = VALUE"),
])
def test_each_mistake_is_one_sentence_naming_its_line(change, message):
    text = GOOD.replace(*change)
    if message is None:
        parse(text)
        return
    with pytest.raises(ValidationError, match=message) as caught:
        parse(text)
    assert "\n" not in str(caught.value) and KEY not in str(caught.value)


def test_sections_must_be_there():
    with pytest.raises(ValidationError, match=r"^WireGuard file, line 8: \[Peer\] has no Endpoint$"):
        parse(GOOD.replace("Endpoint = vpn.example.net:51820\n", ""))
    with pytest.raises(ValidationError, match=r"needs a \[Peer\] section"):
        parse(GOOD.split("[Peer]")[0])
    with pytest.raises(ValidationError, match="exactly one"):
        parse(GOOD + "[Interface]\n")


def test_an_endpoint_name_is_resolved_once_or_refused_naming_its_line():
    asked = []
    config = resolve_endpoints(parse(GOOD), lambda host, port: asked.append(host) or ["203.0.113.7"])
    assert asked == ["vpn.example.net"] and str(config.peers[0].endpoint) == "203.0.113.7:51820"
    literal = parse(GOOD.replace("vpn.example.net", "[2001:db8::1]"))
    assert str(resolve_endpoints(literal, lambda *a: pytest.fail("no lookup")).peers[0].endpoint) == \
        "[2001:db8::1]:51820"
    with pytest.raises(ValidationError, match=r"^WireGuard file, line 11: Endpoint vpn.example.net does not resolve$"):
        resolve_endpoints(parse(GOOD), lambda host, port: [])


def test_not_text_or_too_long_is_refused():
    with pytest.raises(ValidationError):
        parse(b"[Interface]")
    with pytest.raises(ValidationError, match="longer than"):
        parse("#" * 70000)
