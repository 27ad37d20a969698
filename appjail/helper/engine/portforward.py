"""A jail's port forwarded by its VPN's gateway (`forward_port = "natpmp"`): mapped, renewed, handed over.

One thread per such jail (never the main loop: a request may wait seconds
for the gateway) asks by NAT-PMP (natpmp) from inside the jail, renews at
half the granted lease, and after a failure asks again after 1, 2, 4 ...
60 s (Schedule). The port is shown (`status`, for `ls`/`inspect`) and
written, as its decimal number and a newline, to
/run/appjail/forwarded/KERNEL (root's directory; the file is the jail
owner's, 0400), which is removed while no mapping holds; programs started
once it holds also get APPJAIL_FORWARDED_PORT. A lease that ends without a
renewal makes the port `lost` until a request succeeds again.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...model import forward_gateway
from ..tunnels.natpmp import FIRST_WAIT_S, TRIES, Client, Mapping, NatPmpError, forward

if TYPE_CHECKING:
    from .jail import Jail

log = logging.getLogger(__name__)
LIFETIME_S = 60  # asked for; ProtonVPN's documented lease
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 60.0
DYNAMIC_PORTS = (49152, 65535)  # the first wish; the gateway may choose another
MAPPING, MAPPED, LOST = "mapping", "mapped", "lost"
ENV_PORT, ENV_FILE = "APPJAIL_FORWARDED_PORT", "APPJAIL_FORWARDED_PORT_FILE"


class Schedule:
    """When to ask the gateway next, and what the port's state is, at monotonic times given.

    A success holds the port until its lease ends and asks again at half of
    it; a failure asks again after a backoff that doubles up to
    BACKOFF_MAX_S (and never later than the lease's end), and loses the port
    once its lease has ended.
    """

    def __init__(self) -> None:
        self.state, self.port, self.error = MAPPING, 0, ""
        self.renewals = 0
        self.expires = 0.0  # monotonic end of the current lease
        self._backoff = BACKOFF_FIRST_S

    def succeeded(self, mapping: Mapping, now: float) -> float:
        """The delay until the renewal."""
        if self.state == MAPPED and mapping.external == self.port:
            self.renewals += 1
        self.state, self.port, self.error = MAPPED, mapping.external, ""
        self.expires = now + mapping.lifetime
        self._backoff = BACKOFF_FIRST_S
        return mapping.lifetime / 2

    def failed(self, error: str, now: float) -> float:
        """The delay until the next try."""
        self.error = error
        if self.state == MAPPED and now >= self.expires:
            self.state, self.port = LOST, 0
        delay = self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        if self.state == MAPPED:
            delay = min(delay, max(self.expires - now, 0.0))
        return delay


class Forwarder:
    """The forwarding of one jail, in a daemon thread of its own until stop()."""

    def __init__(self, jail_name: str, gateway: Callable[[], str | None], opener: Callable[[], socket.socket],
                 port_file: PortFile, on_port: Callable[[int | None], None] = lambda port: None,
                 clock: Callable[[], float] = time.monotonic, lifetime: int = LIFETIME_S,
                 patience: tuple[float, int] = (FIRST_WAIT_S, TRIES), wish: int | None = None) -> None:
        """gateway(): whom to ask, looked up for each request (an OpenVPN tunnel's pushed DNS comes late);
        on_port(port or None): the port changed, before anyone is told (the firewall opens it);
        patience: each request's first wait for an answer, and how often it is sent;
        wish: the port to ask for first (the one held before a helper restart), else a random one."""
        self.jail_name, self.gateway, self.opener, self.on_port = jail_name, gateway, opener, on_port
        self.port_file, self.clock, self.lifetime, self.patience = port_file, clock, lifetime, patience
        self.stopped = threading.Event()
        self.asked = ""  # the gateway last asked
        self.schedule = Schedule()
        self._wish = wish or random.randint(*DYNAMIC_PORTS)
        self._thread = threading.Thread(target=self._run, name=f"appjail-natpmp-{jail_name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread within a request's wait; the file goes now."""
        self.stopped.set()
        self.port_file.remove()

    def step(self) -> float:
        """One request (a mapping or its renewal); the delay until the next."""
        schedule, before = self.schedule, self.schedule.port
        try:
            self.asked = self.gateway() or ""
            if not self.asked:
                raise NatPmpError("no gateway to ask: the jail has no nameserver, give natpmp:GATEWAY")
            client = Client(self.asked, self.opener, self.stopped, *self.patience)
            mapping = forward(client, schedule.port or self._wish, self.lifetime)
        except NatPmpError as exc:
            delay = schedule.failed(str(exc), self.clock())
            log.warning("jail %s: forwarded port: %s (again in %.0f s)", self.jail_name, exc, delay)
        else:
            delay = schedule.succeeded(mapping, self.clock())
            if mapping.external != before:
                log.info("jail %s: port %d forwarded by %s for %d s", self.jail_name, mapping.external,
                         self.asked, mapping.lifetime)
        if self.stopped.is_set():
            return 0.0
        if schedule.port != before:
            if not schedule.port:
                self.port_file.remove()
            self.on_port(schedule.port or None)
            if schedule.port:
                self.port_file.write(schedule.port)
        return delay

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.stopped.wait(self.step())

    def status(self) -> dict:
        """As `ls --json` and `inspect --json` show it (expires: epoch seconds, 0 while nothing holds)."""
        schedule = self.schedule
        left = schedule.expires - self.clock()
        return {"method": "natpmp", "gateway": self.asked, "state": schedule.state, "port": schedule.port,
                "expires": int(time.time() + left) if schedule.state == MAPPED else 0,
                "renewals": schedule.renewals, "error": schedule.error}


def environment(jail: Jail) -> dict[bytes, bytes]:
    """What a program started in the jail now learns of its forwarded port (nothing while none holds)."""
    forwarder = jail.forwarder
    if forwarder is None or not forwarder.schedule.port:
        return {}
    return {ENV_PORT.encode(): str(forwarder.schedule.port).encode(),
            ENV_FILE.encode(): str(forwarder.port_file.path).encode()}


class PortFile:
    """/run/appjail/forwarded/KERNEL: the port, for the jail's owner to read."""

    def __init__(self, directory: Path, kernel_name: str, owner_uid: int) -> None:
        self.path, self.owner_uid = directory / kernel_name, owner_uid

    def write(self, port: int) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
        try:
            os.fchown(fd, self.owner_uid, -1)
            os.fchmod(fd, 0o400)
            os.write(fd, f"{port}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Forwards:
    """The forwarders of the engine's jails: started for a jail, and their files swept."""

    def __init__(self, directory: Path, system: Any, lifetime: int = LIFETIME_S) -> None:
        self.directory, self.system = directory, system  # system: the netns module (run_in_namespace)
        self.lifetime = lifetime  # asked of the gateway

    def start(self, jail: Jail, on_port: Callable[[int | None], None]) -> Forwarder:
        def opener() -> socket.socket:
            """A UDP socket of the jail's namespace: the request leaves as the jail's traffic does."""
            return self.system.run_in_namespace(
                jail.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC))

        forwarder = Forwarder(jail.name, lambda: forward_gateway(jail.spec.forward_port, jail.dns), opener,
                              self.port_file(jail), on_port, lifetime=self.lifetime, wish=self.recorded(jail))
        forwarder.start()
        return forwarder

    def port_file(self, jail: Jail) -> PortFile:
        return PortFile(self.directory, jail.netns, jail.owner_uid)

    def recorded(self, jail: Jail) -> int | None:
        """The port a jail held when the helper before this one ended (its file), if any."""
        try:
            text = self.port_file(jail).path.read_text()
        except OSError:
            return None
        return int(text) if text.strip().isdigit() and 1 <= int(text) <= 65535 else None

    def sweep(self, live_netns: Iterable[str]) -> list[str]:
        """Remove the files of jails that are gone; their names."""
        keep = set(live_netns)
        if not self.directory.is_dir():
            return []
        gone = [path for path in self.directory.iterdir() if path.name.removesuffix(".tmp") not in keep]
        for path in gone:
            path.unlink(missing_ok=True)
        return [path.name for path in gone]
