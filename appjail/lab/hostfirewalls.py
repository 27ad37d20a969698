"""The host firewalls people have, set up inside the lab's HOST namespace only.

Each is a context manager that sets one up and takes it down again: Docker's
iptables-nft setup, the real ufw, the real firewalld (on the lab's own bus),
and an admin's nftables ruleset. `snapshot()` reads what a host firewall is
(nftables, iptables-legacy, firewalld's runtime zones), counters aside, so a
test can say that appjail left it as it found it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from appjail.lab.errors import LabError
from appjail.lab.netns import netns_exec_argv
from appjail.lab.process import READY_TIMEOUT, child_env, stop

FIREWALLD = "org.fedoraproject.FirewallD1"
FIREWALLD_PATH = "/org/fedoraproject/FirewallD1"
UFW_FILES = (Path("/etc/ufw"), Path("/etc/default/ufw"))
DOCKER_SETUP = (["iptables-nft", "-N", "DOCKER-USER"], ["iptables-nft", "-A", "DOCKER-USER", "-j", "RETURN"],
                ["iptables-nft", "-I", "FORWARD", "-j", "DOCKER-USER"], ["iptables-nft", "-P", "FORWARD", "DROP"])
ADMIN_SETUP = (["nft", "add", "table", "inet", "filter"],
               ["nft", "add", "chain", "inet", "filter", "forward",
                "{ type filter hook forward priority 0; policy drop; }"])


def run_in(ns: str, argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(netns_exec_argv(ns, argv), capture_output=True, text=True, env=child_env(env))
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} in {ns} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass(frozen=True)
class FirewallSnapshot:
    nftables: str
    legacy: str
    firewalld_zones: dict


def snapshot(ns: str, bus_address: str | None = None) -> FirewallSnapshot:
    """The host's firewall, counters aside; an empty legacy table counts as none (loading one filters nothing)."""
    nftables = _without_unused_firewalld_chains(run_in(ns, ["nft", "-s", "list", "ruleset"]))
    legacy = re.sub(r"\[\d+:\d+\]", "", run_in(ns, ["iptables-legacy-save"]))
    tables = re.findall(r"^\*\w+\n(?:[^*].*\n)*?COMMIT$", "\n".join(
        line for line in legacy.splitlines() if not line.startswith("#")) + "\n", re.M)
    kept = [t for t in tables if any(not re.fullmatch(r":[A-Z]+ ACCEPT ?", line)
                                     for line in t.splitlines()[1:-1])]
    return FirewallSnapshot(nftables, "\n".join(kept), firewalld_zones(bus_address) if bus_address else {})


def _without_unused_firewalld_chains(ruleset: str) -> str:
    """The ruleset, less the chains of firewalld's table that nothing jumps to.

    firewalld builds a zone's chains the first time the zone gets an
    interface and keeps them, unreferenced, after the last one left: its
    own bookkeeping, which filters nothing and no API removes.
    """
    head, found, rest = ruleset.partition("table inet firewalld {\n")
    if not found:
        return ruleset
    body, end, tail = rest.partition("\n}\n")
    blocks: dict[str, list[str]] = {}
    for line in body.splitlines():
        if line.startswith("\tchain "):
            name = line.split()[1]
            blocks[name] = []
        if line:
            blocks[name].append(line)
    while unused := [name for name, block in blocks.items() if not any("hook " in line for line in block)
                     and not any(_jumps_to(line, name) for other in blocks.values() for line in other)]:
        for name in unused:
            del blocks[name]
    return head + found + "\n\n".join("\n".join(block) for block in blocks.values()) + end + tail


def _jumps_to(rule: str, chain: str) -> bool:
    words = rule.split()
    return any(verdict in ("jump", "goto") and target == chain for verdict, target in zip(words, words[1:]))


def firewalld_zones(bus_address: str) -> dict:
    """firewalld's runtime zone bindings (interfaces and sources per active zone); {} when it does not run."""
    import dbus

    bus = dbus.bus.BusConnection(bus_address)
    try:
        if not bus.name_has_owner(FIREWALLD):
            return {}
        zones = dbus.Interface(bus.get_object(FIREWALLD, FIREWALLD_PATH), FIREWALLD + ".zone")
        return {str(zone): {str(k): sorted(map(str, v)) for k, v in info.items()}
                for zone, info in zones.getActiveZones().items()}
    finally:
        bus.close()


def _nft_tables(ns: str) -> set[str]:
    return {line.removeprefix("table ") for line in run_in(ns, ["nft", "list", "tables"]).splitlines()}


@contextmanager
def _new_nft_tables_removed(ns: str) -> Iterator[None]:
    """Whatever nftables tables appear meanwhile (iptables-nft's, an admin's) are deleted afterwards."""
    before = _nft_tables(ns)
    try:
        yield
    finally:
        for table in sorted(_nft_tables(ns) - before):
            run_in(ns, ["nft", "delete", "table", *table.split()])


@contextmanager
def _commands_applied(ns: str, commands: Iterable[list[str]]) -> Iterator[None]:
    """Firewall commands run in NS for the block; the tables they made go afterwards."""
    with _new_nft_tables_removed(ns):
        for argv in commands:
            run_in(ns, argv)
        yield


def docker(ns: str) -> AbstractContextManager[None]:
    """Docker's setup: iptables-nft FORWARD policy DROP, jumping to DOCKER-USER first."""
    return _commands_applied(ns, DOCKER_SETUP)


def admin_ruleset(ns: str) -> AbstractContextManager[None]:
    """An admin's own `inet filter forward` chain with policy drop."""
    return _commands_applied(ns, ADMIN_SETUP)


@contextmanager
def ufw(ns: str) -> Iterator[None]:
    """Debian's ufw, enabled (forward policy DROP); the files it writes are put back and checked."""
    saved = Path(tempfile.mkdtemp(prefix="appjail-lab-ufw-"))
    copies = [(path, saved / str(i)) for i, path in enumerate(UFW_FILES)]
    for path, copy in copies:
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
    try:
        with _new_nft_tables_removed(ns):
            try:
                run_in(ns, ["ufw", "--force", "enable"])
                yield
            finally:
                run_in(ns, ["ufw", "--force", "disable"])
    finally:
        for path, copy in copies:
            if path.is_dir():
                shutil.rmtree(path)
                shutil.copytree(copy, path)
            else:
                shutil.copy2(copy, path)
        changed = [str(path) for path, copy in copies if not _same_tree(path, copy)]
        shutil.rmtree(saved)
        if changed:
            raise LabError(f"ufw's files were not restored: {changed}")


def _same_tree(a: Path, b: Path) -> bool:
    if a.is_dir() != b.is_dir():
        return False
    if not a.is_dir():
        return a.read_bytes() == b.read_bytes()
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(_same_tree(a / n, b / n) for n in names)


class Firewalld:
    """The real firewalld (nftables backend) in a namespace, on a given bus; start() again to restart it."""

    def __init__(self, ns: str, bus_address: str, log_path: Path) -> None:
        self.ns = ns
        self.bus_address = bus_address
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(netns_exec_argv(self.ns, ["firewalld", "--nofork", "--nopid"]),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env(env))
        deadline = time.monotonic() + READY_TIMEOUT
        while self.call("getDefaultZone") is None:  # answered once its start-up is done
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError("firewalld did not start: " + self.log_path.read_text(errors="replace"))
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)  # SIGTERM: firewalld removes its table (CleanupOnExit)
            self.proc = None

    def call(self, method: str, *args: str, interface: str = FIREWALLD):
        """A method of firewalld's main object; None while it does not own its name."""
        import dbus

        bus = dbus.bus.BusConnection(self.bus_address)
        try:
            if not bus.name_has_owner(FIREWALLD):
                return None
            return getattr(dbus.Interface(bus.get_object(FIREWALLD, FIREWALLD_PATH), interface), method)(*args)
        finally:
            bus.close()

    def zone_of(self, ifname: str) -> str:
        return str(self.call("getZoneOfInterface", ifname, interface=FIREWALLD + ".zone"))


@contextmanager
def firewalld(ns: str, bus_address: str, log_path: Path) -> Iterator[Firewalld]:
    daemon = Firewalld(ns, bus_address, log_path)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
