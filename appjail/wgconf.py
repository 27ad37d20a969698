"""A wg-quick style WireGuard file, parsed and validated field by field.

The CLI reads the file as the user and sends its text; the helper parses it
here and trusts nothing in it. Every mistake is one sentence naming the
line. Only the keys a jail's tunnel needs are known: wg-quick's PreUp,
PostUp, Table, SaveConfig and friends run commands or touch the host, so
they are refused like any unknown key.

The private and preshared keys leave this module only in `setconf_text`,
which goes down a pipe to `wg setconf IFACE /dev/stdin`; `summary` is what
may be recorded and shown.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections import namedtuple
from collections.abc import Callable, Sequence

from .model import MAX_DNS_SERVERS, ValidationError, is_address, is_hostname

MAX_TEXT = 64 * 1024
MAX_PEERS = 16
MAX_ALLOWED_IPS = 256
DEFAULT_MTU = 1420
MIN_MTU, MAX_MTU = 1280, 9000  # 1280: IPv6's minimum; 9000: jumbo frames

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Endpoint(namedtuple("Endpoint", "host port line")):
    """`host:port` as written (host a name or an address literal), with its line for messages."""

    __slots__ = ()

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Peer(namedtuple("Peer", "public_key preshared_key endpoint allowed_ips keepalive")):
    __slots__ = ()


class WireGuardConfig(namedtuple("WireGuardConfig", "private_key addresses dns mtu peers")):
    """addresses: interfaces; dns: IPv4 strings; peers: Peer tuples; keys base64 as wg prints them."""

    __slots__ = ()

    @property
    def ipv6(self) -> bool:
        """IPv6 goes through the tunnel only when the file gives the jail an IPv6 address."""
        return any(address.version == 6 for address in self.addresses)

    def routes(self) -> list[Network]:
        """The jail's routes (AllowedIPs of every peer), IPv6 ones only with an IPv6 address."""
        found = dict.fromkeys(net for peer in self.peers for net in peer.allowed_ips
                              if net.version == 4 or self.ipv6)
        return list(found)

    def setconf_text(self) -> str:
        """The wg(8) configuration, keys included: for a pipe to `wg setconf`, never a file."""
        lines = ["[Interface]", f"PrivateKey = {self.private_key}"]
        for peer in self.peers:
            lines += ["[Peer]", f"PublicKey = {peer.public_key}", f"Endpoint = {peer.endpoint}",
                      "AllowedIPs = " + ", ".join(map(str, peer.allowed_ips))]
            if peer.preshared_key:
                lines.append(f"PresharedKey = {peer.preshared_key}")
            if peer.keepalive:
                lines.append(f"PersistentKeepalive = {peer.keepalive}")
        return "\n".join(lines) + "\n"

    def summary(self) -> dict:
        """What may be recorded and shown: no key but the peers' public ones."""
        return {"type": "wireguard", "endpoint": ",".join(str(p.endpoint) for p in self.peers),
                "peer": ",".join(p.public_key for p in self.peers),
                "addresses": [str(a) for a in self.addresses]}


def _fail(line: int, problem: str) -> ValidationError:
    return ValidationError(f"WireGuard file, line {line}: {problem}")


def _key(value: str, line: int, what: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(line, f"{what} is not base64") from None
    if len(raw) != 32:
        raise _fail(line, f"{what} has {len(raw)} bytes, a WireGuard key has 32")
    return base64.b64encode(raw).decode()


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _address(value: str, line: int) -> Interface:
    try:
        address = ipaddress.ip_interface(value)
    except ValueError:
        raise _fail(line, f"Address {value!r} is not an IPv4 or IPv6 address") from None
    ip = address.ip
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        raise _fail(line, f"Address {value} cannot be a tunnel address")
    return address


def _network(value: str, line: int) -> Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _fail(line, f"AllowedIPs {value!r} is not an address range such as 0.0.0.0/0") from None


def _dns(value: str, line: int) -> str:
    try:
        server = ipaddress.IPv4Address(value)
    except ValueError:
        raise _fail(line, f"DNS {value!r} is not an IPv4 address (search domains are not supported)") from None
    if server.is_loopback or server.is_unspecified or server.is_multicast:
        raise _fail(line, f"DNS {value} is not reachable from a jail")
    return str(server)


def _number(value: str, line: int, key: str, low: int, high: int) -> int:
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise _fail(line, f"{key} {value!r} is not a number from {low} to {high}")
    return int(value)


def _endpoint(value: str, line: int) -> Endpoint:
    host, colon, port = value.rpartition(":")
    if not colon or not host:
        raise _fail(line, f"Endpoint {value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _fail(line, f"Endpoint {value!r} has no IPv6 address in its brackets") from None
    elif not is_hostname(host):
        raise _fail(line, f"Endpoint {value!r} is neither a host name nor an address")
    return Endpoint(host, _number(port, line, "Endpoint port", 1, 65535), line)


# key (lower case) -> (as written in messages, may repeat)
_INTERFACE_KEYS = {"privatekey": ("PrivateKey", False), "address": ("Address", True),
                   "dns": ("DNS", True), "mtu": ("MTU", False)}
_PEER_KEYS = {"publickey": ("PublicKey", False), "presharedkey": ("PresharedKey", False),
              "endpoint": ("Endpoint", False), "allowedips": ("AllowedIPs", True),
              "persistentkeepalive": ("PersistentKeepalive", False)}
_SECTIONS = {"interface": _INTERFACE_KEYS, "peer": _PEER_KEYS}


def parse(text: object) -> WireGuardConfig:
    """The file's text (as sent by the CLI) to a validated config; ValidationError names the line."""
    if not isinstance(text, str):
        raise ValidationError("invalid WireGuard file: expected its text")
    if len(text) > MAX_TEXT:
        raise ValidationError(f"invalid WireGuard file: longer than {MAX_TEXT} bytes")
    sections: list[tuple[str, int, dict[str, list[tuple[int, str]]]]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            name = line[1:-1].strip().lower() if line.endswith("]") else ""
            if name not in _SECTIONS:
                raise _fail(number, f"unknown section {line!r}: expected [Interface] or [Peer]")
            sections.append((name, number, {}))
            continue
        key, equals, value = (part.strip() for part in line.partition("="))
        if not equals or not value:
            raise _fail(number, f"expected KEY = VALUE, not {line[:40]!r}")
        if not sections:
            raise _fail(number, f"{key} comes before any [Interface] or [Peer] section")
        section, _start, values = sections[-1]
        known = _SECTIONS[section].get(key.lower())
        if known is None:
            raise _fail(number, f"unknown key {key!r} in [{section.capitalize()}]")
        label, repeats = known
        if values.get(label) and not repeats:
            raise _fail(number, f"{label} is given twice in one section")
        values.setdefault(label, []).append((number, value))
    interfaces = [s for s in sections if s[0] == "interface"]
    if len(interfaces) != 1:
        where = interfaces[1][1] if interfaces else 1
        raise _fail(where, "a WireGuard file needs exactly one [Interface] section")
    peers = [_peer(start, values) for name, start, values in sections if name == "peer"]
    _, start, values = interfaces[0]
    if not peers:
        raise _fail(start, "a WireGuard file needs a [Peer] section")
    if len(peers) > MAX_PEERS:
        raise ValidationError(f"invalid WireGuard file: more than {MAX_PEERS} peers")
    private = _required(values, "PrivateKey", start, "[Interface]")
    addresses = [_address(item, n) for n, value in values.get("Address", []) for item in _items(value)]
    if not addresses:
        raise _fail(start, "[Interface] has no Address")
    dns = tuple(dict.fromkeys(_dns(item, n) for n, value in values.get("DNS", []) for item in _items(value)))
    if len(dns) > MAX_DNS_SERVERS:
        raise _fail(values["DNS"][-1][0], f"more than {MAX_DNS_SERVERS} DNS servers")
    mtu = DEFAULT_MTU
    if "MTU" in values:
        (n, value), = values["MTU"]
        mtu = _number(value, n, "MTU", MIN_MTU, MAX_MTU)
    return WireGuardConfig(_key(private[1], private[0], "PrivateKey"), tuple(addresses), dns, mtu, tuple(peers))


def _required(values: dict, label: str, start: int, section: str) -> tuple[int, str]:
    if label not in values:
        raise _fail(start, f"{section} has no {label}")
    return values[label][0]


def _peer(start: int, values: dict[str, list[tuple[int, str]]]) -> Peer:
    public = _required(values, "PublicKey", start, "[Peer]")
    endpoint = _required(values, "Endpoint", start, "[Peer]")
    if "AllowedIPs" not in values:
        raise _fail(start, "[Peer] has no AllowedIPs")
    allowed = tuple(dict.fromkeys(_network(item, n) for n, value in values["AllowedIPs"] for item in _items(value)))
    if not allowed or len(allowed) > MAX_ALLOWED_IPS:
        raise _fail(values["AllowedIPs"][0][0], f"AllowedIPs needs 1 to {MAX_ALLOWED_IPS} ranges")
    psk = values.get("PresharedKey")
    keepalive = values.get("PersistentKeepalive")
    return Peer(_key(public[1], public[0], "PublicKey"),
                _key(psk[0][1], psk[0][0], "PresharedKey") if psk else None,
                _endpoint(endpoint[1], endpoint[0]), allowed,
                _number(keepalive[0][1], keepalive[0][0], "PersistentKeepalive", 0, 65535) if keepalive else 0)


Resolve = Callable[[str, int], Sequence[str]]  # (host, port) -> addresses, first preferred


def resolve_endpoints(config: WireGuardConfig, resolve: Resolve) -> WireGuardConfig:
    """Every Endpoint as an address literal: a name is looked up once, here, or refused."""
    peers = []
    for peer in config.peers:
        endpoint = peer.endpoint
        if not is_address(endpoint.host):
            addresses = resolve(endpoint.host, endpoint.port)
            if not addresses:
                raise _fail(endpoint.line, f"Endpoint {endpoint.host} does not resolve")
            endpoint = endpoint._replace(host=addresses[0])
        peers.append(peer._replace(endpoint=endpoint))
    return config._replace(peers=tuple(peers))
