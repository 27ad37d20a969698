"""`appjail-jail@KERNEL.service`: a unit up exactly while appjail's jail /run/netns/KERNEL exists.

    python3 -m appjail.jailunit KERNEL

Services put into a jail by `appjail service` (services.py) are bound to it
(BindsTo=, After=). It waits for the jail's namespace to be mounted (the
helper makes declared jails at its start: at boot that comes after the
service manager starts this), for at most $APPJAIL_JAIL_WAIT seconds (90);
then tells systemd it is ready (sd_notify), and exits when the namespace is
unmounted: the jail is gone, and systemd stops the services bound to it.
Without the jail by the deadline it fails, and so does their start. The
mount table is watched the kernel's way: /proc/self/mountinfo polls
readable (POLLPRI) when it changes.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

NETNS_DIR = "/run/netns"
DEFAULT_WAIT_S = 90.0


def mounted(path: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    with open(mountinfo) as table:
        return any(line.split()[4] == path for line in table)


def notify(state: str) -> None:
    """sd_notify(3): tell the service manager STATE (nothing without one)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(state.encode(), "\0" + address[1:] if address.startswith("@") else address)


def wait_for(path: str, present: bool, deadline: float | None) -> bool:
    """Until `path` is mounted (present) or not; False when the deadline (monotonic) passed first."""
    with open("/proc/self/mountinfo") as table:
        poller = select.poll()
        poller.register(table, select.POLLPRI | select.POLLERR)
        while mounted(path) != present:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            poller.poll(None if left is None else max(1, int(left * 1000)))
            table.seek(0)
            table.read()  # the change is seen; the next poll waits for another
    return True


def main(argv: list[str]) -> int:
    from .model import ValidationError, validate_kernel_name

    try:
        (kernel_name,) = argv
        path = f"{NETNS_DIR}/{validate_kernel_name(kernel_name)}"
    except (ValueError, ValidationError):
        print("usage: python3 -m appjail.jailunit KERNEL (a jail's network namespace, aj-...)", file=sys.stderr)
        return 2
    wait = float(os.environ.get("APPJAIL_JAIL_WAIT", DEFAULT_WAIT_S))
    if not wait_for(path, True, time.monotonic() + wait):
        print(f"no appjail jail has namespace {path} (waited {wait:g} s): is it declared in "
              "/etc/appjail/jails.d, and did the helper make it (appjail doctor)?", file=sys.stderr)
        return 1
    notify("READY=1")
    print(f"jail namespace {path} is there; following it", file=sys.stderr)
    wait_for(path, False, None)
    print(f"jail namespace {path} is gone: stopping the services inside it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
