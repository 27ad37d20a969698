"""wireguard-go as the lab uses it: keys, the daemon's control socket, telling its interface.

wireguard-go keeps its control socket at /var/run/wireguard/IFNAME.sock
whatever network namespace it runs in, so interface names are machine-wide.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from appjail.lab.process import run_checked

SOCKET_DIR = Path("/var/run/wireguard")
DAEMON = "wireguard-go"


def socket_path(ifname: str) -> Path:
    return SOCKET_DIR / f"{ifname}.sock"


def keypair() -> tuple[str, str]:
    """A fresh (private, public) key pair, base64 as `wg` prints them."""
    private = run_checked(["wg", "genkey"]).strip()
    return private, run_checked(["wg", "pubkey"], input=private).strip()


def write_private_key(path: Path, key: str) -> None:
    """Write a key file only root can read (`wg set ... private-key FILE` reads it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)
        file.write(key + "\n")


def socket_in_use(ifname: str) -> bool:
    """Whether a live wireguard-go answers on IFNAME's control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(socket_path(ifname)))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def remove_stale_socket(ifname: str, wait: float = 0.0) -> None:
    """Remove IFNAME's control socket if no live wireguard-go is behind it, waiting up to `wait`
    seconds for one just killed: its other threads may still hold the socket after its main
    thread is gone (a killed wireguard-go never removes its socket itself)."""
    deadline = time.monotonic() + wait
    while socket_in_use(ifname):
        if time.monotonic() >= deadline:
            return
        time.sleep(0.02)
    socket_path(ifname).unlink(missing_ok=True)


def interface_of(pid: int) -> str | None:
    """The interface a wireguard-go process serves (its last argument), or None if it is something else."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return None
    return argv[-1] if len(argv) > 1 and os.path.basename(argv[0]) == DAEMON else None
