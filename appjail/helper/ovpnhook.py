"""openvpn's `--up` hook: hands the tunnel's settings to the helper and waits for its answer.

openvpn runs this (fixed argv: the helper's own interpreter, `-I`, this
module and the helper's socket for this jail) once it opened its tun device
with `--ifconfig-noexec --route-noexec`. The hook does nothing itself: it
sends the environment openvpn gave it (only the names the helper reads) to
the helper, which moves the device into the jail and configures it there,
and exits 0 only when the helper says so (non-zero makes openvpn give up:
the jail stays closed).
"""

from __future__ import annotations

import json
import os
import socket
import sys

NAMES = ("dev", "ifconfig_local", "ifconfig_netmask", "ifconfig_remote", "ifconfig_ipv6_local",
         "ifconfig_ipv6_netbits", "tun_mtu", "trusted_ip", "trusted_port")
TIMEOUT = 20.0


def report(environ: dict[str, str]) -> dict[str, str]:
    """What the helper reads of openvpn's environment: the tunnel's settings and pushed options."""
    return {name: value for name, value in environ.items() if name in NAMES or name.startswith("foreign_option_")}


def main(argv: list[str]) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(argv[1])
        sock.sendall(json.dumps(report(dict(os.environ))).encode() + b"\n")
        answer = sock.makefile("rb").readline()
    return 0 if answer == b"ok\n" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
