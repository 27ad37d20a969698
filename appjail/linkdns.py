"""The DNS servers the system has for one network interface: a VPN's own.

A `--vpn IFACE` jail may leave only through IFACE, so its names must go to a
server the VPN reaches. The host's upstream servers are usually the home
router's private address, which only the LAN reaches: asked through the
tunnel they never answer, or answer the VPN provider's neighbours. So a VPN
jail without --dns takes the servers the system keeps for IFACE, in this
order: systemd-resolved's per-link servers (its Link object's DNS property),
NetworkManager's for the device (its IP4Config's NameserverData), and
resolvconf's record of the interface (what wg-quick and OpenVPN's
update-resolv-conf hand it: /run/resolvconf/interface/tun.wg0, tun0.openvpn).
Without any, there is no server to use, and the caller is told to give one
with --dns.

The helper asks when it makes a jail; `appjail doctor --vpn IFACE` asks the
same, as the user (all three are readable by anyone). The buses are asked
through busctl, with a timeout: a blocking call on a worker thread of the
helper's own connection is not what dbus-python is made for.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .model import MAX_DNS_SERVERS

RESOLVCONF_DIRS = (Path("/run/resolvconf/interface"), Path("/run/resolvconf/interfaces"))  # resolvconf, openresolv
BUS_TIMEOUT_S = 2
AF_INET = 2
RESOLVED = ("org.freedesktop.resolve1", "/org/freedesktop/resolve1")
NM = ("org.freedesktop.NetworkManager", "/org/freedesktop/NetworkManager")


class LinkDNS(NamedTuple):
    servers: tuple[str, ...]
    source: str  # where they were found, for messages: "systemd-resolved", a record's path


class NoLinkDNS(RuntimeError):
    """The system has no DNS server for the interface; the message names --dns."""


class BusctlError(RuntimeError):
    """A bus call that failed: no such service, object or property, or no answer in time."""


class Busctl:
    """The system bus (or the bus at `address`) through busctl(1): each call a process, ended
    after BUS_TIMEOUT_S."""

    def __init__(self, address: str | None = None) -> None:
        self.bus = f"--address={address}" if address else "--system"

    def call(self, service: str, path: str, interface: str, method: str, signature: str, *args: object) -> Any:
        return self._run("call", service, path, interface, method, signature, *map(str, args))

    def get(self, service: str, path: str, interface: str, name: str) -> Any:
        return self._run("get-property", service, path, interface, name)

    def _run(self, *argv: str) -> Any:
        try:
            result = subprocess.run(["busctl", self.bus, "--json=short", f"--timeout={BUS_TIMEOUT_S}", *argv],
                                    capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                    timeout=BUS_TIMEOUT_S * 2)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BusctlError(str(exc)) from None
        if result.returncode != 0:
            raise BusctlError(result.stderr.strip())
        try:
            data = json.loads(result.stdout)["data"]
        except (ValueError, KeyError, TypeError):
            raise BusctlError(f"busctl said {result.stdout[:80]!r}") from None
        return data[0] if argv[0] == "call" else data


def parse_nameservers(text: str) -> list[str]:
    """IPv4 non-loopback `nameserver` entries of a resolv.conf text."""
    servers = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = ipaddress.ip_address(fields[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback and not address.is_unspecified:
                servers.append(str(address))
    return servers


def resolved_servers(bus: Busctl, ifindex: int) -> list[str]:
    """systemd-resolved's servers for the link: the Link object's DNS, a(iay)."""
    path = bus.call(*RESOLVED, "org.freedesktop.resolve1.Manager", "GetLink", "i", ifindex)
    return [_dotted(address) for family, address in bus.get(RESOLVED[0], path, "org.freedesktop.resolve1.Link", "DNS")
            if family == AF_INET and len(address) == 4]


def networkmanager_servers(bus: Busctl, ifname: str) -> list[str]:
    """NetworkManager's servers for the device: its IP4Config's NameserverData, aa{sv}."""
    device = bus.call(*NM, "org.freedesktop.NetworkManager", "GetDeviceByIpIface", "s", ifname)
    config = bus.get(NM[0], device, "org.freedesktop.NetworkManager.Device", "Ip4Config")
    if config == "/":
        return []
    entries = bus.get(NM[0], config, "org.freedesktop.NetworkManager.IP4Config", "NameserverData")
    return [entry["address"]["data"] for entry in entries if "address" in entry]


def resolvconf_servers(ifname: str, dirs: Sequence[Path] = RESOLVCONF_DIRS) -> tuple[list[str], str]:
    """(servers, record) from resolvconf's record of the interface: named IFACE, IFACE.PROGRAM
    (tun0.openvpn) or PREFIX.IFACE (wg-quick's tun.wg0)."""
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name == ifname or name.startswith(ifname + ".") or name.endswith("." + ifname):
                try:
                    servers = parse_nameservers((directory / name).read_text())
                except OSError:
                    continue
                if servers:
                    return servers, str(directory / name)
    return [], ""


def link_dns(ifname: str, bus: Busctl | None = None, dirs: Sequence[Path] = RESOLVCONF_DIRS,
             ifindex: Callable[[str], int] = socket.if_nametoindex) -> LinkDNS:
    """The servers the system has for `ifname`, from the first source that names one."""
    bus = bus or Busctl()
    try:
        index = ifindex(ifname)
    except OSError:
        raise NoLinkDNS(f"{ifname} does not exist now, so the system has no DNS server for it: "
                        f"give the jail one the VPN reaches with --dns ADDR") from None
    asked: list[tuple[str, Callable[[], list[str]]]] = [
        ("systemd-resolved", lambda: resolved_servers(bus, index)),
        ("NetworkManager", lambda: networkmanager_servers(bus, ifname))]
    for source, ask in asked:
        try:
            servers = _usable(ask())
        except (BusctlError, KeyError, TypeError, ValueError):
            continue
        if servers:
            return LinkDNS(servers, source)
    servers, record = resolvconf_servers(ifname, dirs)
    if servers:
        return LinkDNS(_usable(servers), f"resolvconf ({record})")
    raise NoLinkDNS(f"the system has no DNS server for {ifname} (asked systemd-resolved, NetworkManager and "
                    f"resolvconf), and the host's own are for its other interfaces, which the jail cannot "
                    f"reach: give the jail one the VPN reaches with --dns ADDR (your VPN provider's)")


def _usable(servers: list[str]) -> tuple[str, ...]:
    """IPv4 servers a jail can ask (no loopback: the jail's own is empty), at most three."""
    return tuple(parse_nameservers("\n".join(f"nameserver {s}" for s in servers)))[:MAX_DNS_SERVERS]


def _dotted(address: Sequence[int]) -> str:
    return ".".join(str(byte) for byte in address)
