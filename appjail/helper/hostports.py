"""Which ports the host itself has in use, read from /proc for the calling thread's namespace."""

from __future__ import annotations

import ipaddress
from pathlib import Path

_TCP_LISTEN = "0A"
_TABLES = {"tcp": ("tcp", "tcp6"), "udp": ("udp", "udp6")}


def _address(hex_address: str) -> str:
    """/proc/net's hex address (host byte order per 32-bit word) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def bound_sockets(proto: str, proc_net: Path = Path("/proc/thread-self/net")) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP or bound UDP socket of `proto`."""
    found = set()
    for table in _TABLES[proto]:
        try:
            lines = (proc_net / table).read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for line in lines:
            fields = line.split()
            if proto == "tcp" and fields[3] != _TCP_LISTEN:
                continue
            address, port = fields[1].split(":")
            found.add((_address(address), int(port, 16)))
    return found


def port_in_use(proto: str, port: int, address: str | None,
                proc_net: Path = Path("/proc/thread-self/net")) -> bool:
    """Whether a host socket would receive what a published `address:port` should."""
    wildcards = {"0.0.0.0", "::"}
    for bound_address, bound_port in bound_sockets(proto, proc_net):
        # loopback sockets never see DNATed traffic (OUTPUT skips 127/8)
        if bound_port != port or ipaddress.ip_address(bound_address).is_loopback:
            continue
        if address is None or bound_address in wildcards or bound_address == address:
            return True
    return False
