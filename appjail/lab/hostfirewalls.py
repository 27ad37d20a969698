"""The host firewalls people have, set up inside the lab's HOST namespace only.

Each is a context manager that sets one up and takes it down again: Docker's
iptables-nft setup, a real dockerd (Debian's docker.io), the real ufw, the
real firewalld (on the lab's own bus), and an admin's nftables ruleset. `snapshot()` reads what a host firewall is
(nftables, iptables-legacy, firewalld's runtime zones), counters aside, so a
test can say that appjail left it as it found it.
"""

from __future__ import annotations

import os
import re
import shlex
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
from appjail.lab.process import READY_TIMEOUT, STOP_TIMEOUT, child_env, kill_pids, stop

FIREWALLD = "org.fedoraproject.FirewallD1"
FIREWALLD_PATH = "/org/fedoraproject/FirewallD1"
UFW_FILES = (Path("/etc/ufw"), Path("/etc/default/ufw"))
DOCKER_SETUP = (["iptables-nft", "-N", "DOCKER-USER"], ["iptables-nft", "-A", "DOCKER-USER", "-j", "RETURN"],
                ["iptables-nft", "-I", "FORWARD", "-j", "DOCKER-USER"], ["iptables-nft", "-P", "FORWARD", "DROP"])
DOCKERD, DOCKER = "/usr/sbin/dockerd", "/usr/bin/docker"  # Debian's, whatever else is in PATH
DOCKER_KEY = Path("/etc/docker/key.json")  # dockerd 20.10 makes it there, whatever its --data-root
IPTABLES_TOOLS = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
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
def new_nft_tables_removed(ns: str) -> Iterator[None]:
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
    with new_nft_tables_removed(ns):
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
        with new_nft_tables_removed(ns):
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


class Dockerd:
    """Debian's dockerd in a namespace, on its own directories and socket; start() again to restart it.

    Entered with setns only: `ip netns exec` remounts /sys, hiding the
    cgroup mounts dockerd needs. dockerd runs the `iptables` it finds in
    PATH: a directory of links puts the build asked for (`nft` or `legacy`)
    first, as update-alternatives would on such a host.
    """

    def __init__(self, ns: str, workdir: Path, iptables: str) -> None:
        self.ns = ns
        self.workdir = workdir
        self.iptables = f"iptables-{iptables}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket = workdir / "docker.sock"
        self.bin = workdir / "bin"
        self.bin.mkdir()
        for tool in IPTABLES_TOOLS:
            (self.bin / tool).symlink_to(f"/usr/sbin/{tool.replace('tables', 'tables-' + iptables, 1)}")
        (workdir / "daemon.json").write_text("{}")  # not the machine's /etc/docker/daemon.json

    @property
    def env(self) -> dict[str, str]:
        # no system bus: dockerd would look for a firewalld there
        return {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "DOCKER_CONFIG": str(self.workdir / "cli"),
                "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent"}

    def start(self) -> None:
        """Start it and wait until it answers `docker version`: by then its rules are in place."""
        argv = [DOCKERD, "--data-root", str(self.workdir / "data"), "--exec-root", str(self.workdir / "exec"),
                "--pidfile", str(self.workdir / "docker.pid"), "-H", f"unix://{self.socket}",
                "--config-file", str(self.workdir / "daemon.json"), "--storage-driver", "vfs", "--iptables=true"]
        with open(self.workdir / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(netns_exec_argv(self.ns, argv), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=child_env(self.env), start_new_session=True)
        deadline = time.monotonic() + 3 * READY_TIMEOUT
        while self.docker("version").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError("dockerd did not start: " + (self.workdir / "dockerd.log").read_text(errors="replace"))
            time.sleep(0.1)

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, "-H", f"unix://{self.socket}", *args], capture_output=True, text=True,
                              env=self.env, timeout=3 * READY_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM to dockerd (it stops the containerd it started), then whatever of its group is left."""
        if self.proc is not None:
            stop(self.proc, timeout=3 * STOP_TIMEOUT)
            kill_pids(pid for pid in _group(self.proc.pid))
            self.proc = None


def _group(pgid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == pgid:
                found.append(int(entry.name))
        except ProcessLookupError:
            continue
    return found


@contextmanager
def dockerd(ns: str, iptables: str) -> Iterator[Dockerd]:
    """A dockerd for the caller to start (and restart) when it wants; afterwards every trace goes:
    the daemon, its directories, docker0, its rules and chains, ip_forward as it was.

    Leave it after the jails are gone: putting ip_forward back sets every
    interface's forwarding flag too.
    """
    forwarding = run_in(ns, ["sysctl", "-n", "net.ipv4.ip_forward"]).strip()
    key_existed = DOCKER_KEY.exists()
    workdir = Path(tempfile.mkdtemp(prefix="appjail-lab-dockerd-", dir="/tmp"))  # short, for containerd's sockets
    try:
        daemon = Dockerd(ns, workdir, iptables)
        with new_nft_tables_removed(ns):
            try:
                yield daemon
            finally:
                daemon.stop()
                _docker_rules_removed(ns, daemon.iptables)
                subprocess.run(netns_exec_argv(ns, ["ip", "link", "delete", "docker0"]), capture_output=True)
                run_in(ns, ["sysctl", "-qw", f"net.ipv4.ip_forward={forwarding}"])
    finally:
        for mount in reversed(_mounts_under(workdir)):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(workdir)
        if not key_existed:
            DOCKER_KEY.unlink(missing_ok=True)


def _mounts_under(workdir: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(f"{workdir}/")]


def _docker_rules_removed(ns: str, iptables: str) -> None:
    """Docker's rules in the built-in chains, its chains, and FORWARD's policy ACCEPT again (dockerd leaves
    them all when it stops); everything else in the tables stays."""
    for table in ("filter", "nat"):
        listing = [shlex.split(line) for line in run_in(ns, [iptables, "-w", "-t", table, "-S"]).splitlines()]
        chains = [words[1] for words in listing if words[0] == "-N" and words[1].startswith("DOCKER")]
        for words in listing:
            if words[0] == "-A" and words[1] not in chains and ("docker0" in words or any(
                    target in words for target in chains)):
                run_in(ns, [iptables, "-w", "-t", table, "-D", *words[1:]])
        for verb in ("-F", "-X"):
            for chain in chains:
                run_in(ns, [iptables, "-w", "-t", table, verb, chain])
    run_in(ns, [iptables, "-w", "-P", "FORWARD", "ACCEPT"])
