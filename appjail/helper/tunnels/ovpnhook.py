"""openvpn's `--up` and `--down` hook: hands the tunnel's settings to the helper and waits for its answer.

openvpn runs this (fixed argv: the helper's own interpreter, `-I`, this
module and the helper's socket for this jail) once it opened its tun device
with `--ifconfig-noexec --route-noexec`. The hook does nothing itself: it
sends the environment openvpn gave it (only the names the helper reads) to
the helper, which moves the device into the jail and configures it there,
and exits 0 only when the helper says so (non-zero makes openvpn give up:
the jail stays closed). As `--down` (openvpn closed the device, to
open it anew) it asks the helper to take the device back out of the jail,
where openvpn, unprivileged, could not reach it again. While no helper listens (one restarting), an up
tries again for a while; a down gives up at once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

NAMES = ("script_type", "dev", "ifconfig_local", "ifconfig_netmask", "ifconfig_remote", "ifconfig_ipv6_local",
         "ifconfig_ipv6_netbits", "tun_mtu", "trusted_ip", "trusted_port")
TIMEOUT = 20.0
RETRY = 0.2


def report(environ: dict[str, str]) -> dict[str, str]:
    """What the helper reads of openvpn's environment: the tunnel's settings and pushed options."""
    return {name: value for name, value in environ.items() if name in NAMES or name.startswith("foreign_option_")}


def connect(path: str, deadline: float) -> socket.socket:
    """The helper's socket; while no helper serves it (one restarting, to adopt openvpn), again until the deadline."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(path)
            return sock
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(RETRY)


def main(argv: list[str]) -> int:
    # an up waits for a restarting helper; a down does not hold up openvpn's end (no helper: nothing to undo)
    patience = TIMEOUT if os.environ.get("script_type") == "up" else 0.0
    try:
        sock = connect(argv[1], time.monotonic() + patience)
    except OSError:
        return 1
    with sock:
        sock.sendall(json.dumps(report(dict(os.environ))).encode() + b"\n")
        answer = sock.makefile("rb").readline()
    return 0 if answer == b"ok\n" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
