"""Integration fixtures: the lab, an engine running inside the lab's host.

The machine's own network namespace is never touched: the engine runs in the
test's main thread after it entered the lab's host namespace (network
namespace only, so /run/netns mounts stay visible), and every check that
something is left over looks there and at the machine-wide paths.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appjail.helper.engine.engine import Engine
from appjail.helper.engine.pool import RULE_PRIORITY, TABLE_BASE
from appjail.helper.firewall import choice
from appjail.helper.firewall.coexist import Coexistence
from appjail.helper.kernel import netns
from appjail.lab import Lab, in_netns
from appjail.lab.helper import LabHelper

from ..busfixture import SystemBus, TestUsers
from .helperlab import LAB_PREFIX, remove_user_code, stage_user_code

_machine_netns = os.stat("/proc/self/ns/net")  # where pytest started: never to be touched


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="integration tests need root"))


def residue_in_host(settle: float = 3.0) -> list[str]:
    """Every aj-* trace in the calling thread's (the lab host's) namespace.

    A destroyed jail's veth goes with its namespace, in the kernel's own time:
    what is left is looked at again for up to `settle` seconds.
    """
    deadline = time.monotonic() + settle
    while (found := _residue_in_host()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def _residue_in_host() -> list[str]:
    found = []
    with netns.rtnl() as ipr:
        found += [f"link {n}" for n in netns.list_link_names() if n.startswith("aj-")]
        found += [f"policy rule {r}" for r in netns.policy_rules(ipr, RULE_PRIORITY)]
        found += [f"table {t}" for t in netns.route_tables(ipr)
                  if TABLE_BASE <= t < TABLE_BASE + 16384]
    for backend in map(choice.open_backend, choice.BACKENDS):  # leftovers in either are leaks
        owners, chains = backend.list_owned()
        found += [f"{backend.name} rule {o}" for o in owners] + [f"{backend.name} chain {c}" for c in chains]
    return found


def secret_anywhere(secret: str, logged: str = "") -> list[str]:
    """Where a key or password shows up: the helper's log, `ps`, files under /run, /tmp and /etc.

    Not counted: pytest's own temporary files and the lab servers' (the test
    wrote the secret there itself), and this checkout, wherever it lives.
    """
    found = ["helper log"] if secret in logged else []
    if secret in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
        found.append("ps")
    grep = subprocess.run(["grep", "-rlsF", "--", secret, "/run", "/tmp", "/etc"], capture_output=True, text=True)
    checkout = str(Path(__file__).resolve().parents[2]) + "/"
    return found + [path for path in grep.stdout.splitlines()
                    if not path.startswith(("/tmp/pytest-", checkout)) and "/appjail-lab-" not in path]


def serving(program: str, ifname: str) -> list[int]:
    """PROGRAM's processes serving IFNAME (openvpn's --dev, wireguard-go's last argument), found as anyone
    would find them: the helper knows its own by their record instead."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if not entry.name.isdigit() or not argv or os.path.basename(argv[0]) != program.encode():
            continue
        dev = argv[argv.index(b"--dev") + 1:][:1] if b"--dev" in argv else argv[-1:]
        if dev == [ifname.encode()]:
            found.append(int(entry.name))
    return found


def residue_machine_wide() -> list[str]:
    found = [f"netns {n}" for n in netns.list_namespaces("aj-")]
    found += [f"dir {p}" for p in Path("/etc/netns").glob("aj-*")]
    return found


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    Lab.cleanup_stale(LAB_PREFIX)
    with Lab(prefix=LAB_PREFIX) as the_lab:
        yield the_lab
        with in_netns(the_lab.host_ns):
            left_in_host = residue_in_host()
    left = residue_machine_wide()
    assert not left_in_host and not left, f"aj-* residue after the run: {left_in_host + left}"


@pytest.fixture
def in_host(lab: Lab) -> Iterator[Lab]:
    """The test's main thread runs inside the lab's host namespace."""
    with in_netns(lab.host_ns):
        here = os.stat("/proc/thread-self/ns/net")
        assert (here.st_dev, here.st_ino) != (_machine_netns.st_dev, _machine_netns.st_ino)
        yield lab


@pytest.fixture
def engine(in_host: Lab, tmp_path: Path) -> Iterator[Engine]:
    with running_engine(in_host, tmp_path / "run") as the_engine:
        yield the_engine


@contextmanager
def running_engine(lab: Lab, run_dir: Path, coexist: Coexistence | None = None) -> Iterator[Engine]:
    """An engine watching links and netfilter; afterwards its jails are gone, and every trace of them."""
    the_engine = Engine(run_dir=run_dir, coexist=coexist)
    the_engine.start_link_watch()
    try:
        yield the_engine
    finally:
        the_engine.close()
        for jail in the_engine.list():
            the_engine.destroy(jail.name, jail.owner_uid)
        if lab.wg_ifname not in _links():
            lab.wg_create()  # a test that deleted the tunnel hands it back
    assert residue_in_host() == [] and residue_machine_wide() == []


@pytest.fixture
def coexist_engine(in_host: Lab, bus, tmp_path: Path) -> Iterator[Engine]:
    """The engine as the helper builds it: looking after firewalld on the lab's bus, whose signals
    (Reloaded, a new owner) a main loop of its own serves, as the helper's does."""
    import dbus
    import dbus.mainloop.glib
    from gi.repository import GLib

    dbus.mainloop.glib.threads_init()
    connection = dbus.bus.BusConnection(bus.address, mainloop=dbus.mainloop.glib.DBusGMainLoop())
    loop = GLib.MainLoop()
    loop_thread = threading.Thread(target=loop.run, name="mainloop", daemon=True)
    loop_thread.start()
    run_dir = tmp_path / "run"
    try:
        with running_engine(in_host, run_dir, Coexistence(run_dir / "coexist.json", connection, bus_address=bus.address)) as engine:
            yield engine
    finally:
        loop.quit()
        loop_thread.join()
        connection.close()


def _links() -> list[str]:
    return netns.list_link_names()


def jail_run(name: str, *argv: str, timeout: float = 10, check: bool = False) -> subprocess.CompletedProcess:
    """Run a command inside jail NAME the way ip-netns(8) does (resolver files bound)."""
    return subprocess.run(["ip", "netns", "exec", f"aj-{name}", *argv], capture_output=True,
                          text=True, timeout=timeout, check=check)


# -- the helper behind a private system bus and polkitd, used by test users --

@pytest.fixture(scope="module")
def bus():
    with SystemBus() as system_bus:
        yield system_bus


@pytest.fixture(scope="module")
def users():
    stage_user_code()
    try:
        with TestUsers() as test_users:
            yield test_users
    finally:
        remove_user_code()


@contextmanager
def running_helper(lab: Lab, bus_address: str, tmp_path: Path,
                   enter_argv: Callable[[list[str]], list[str]] | None = None,
                   options: tuple[str, ...] = ()) -> Iterator[LabHelper]:
    """appjail-helper (with extra command-line `options`) in the lab's host on that bus, stopped afterwards;
    its log must hold no traceback."""
    process = LabHelper(lab.host_ns, bus_address, tmp_path / "run", tmp_path / "helper.log", enter_argv)
    process.start(*options)
    try:
        yield process
    finally:
        process.stop_and_clean()
    log = (tmp_path / "helper.log").read_text()
    assert "Traceback" not in log, log


@pytest.fixture
def helper(lab, bus, users, tmp_path):
    with running_helper(lab, bus.address, tmp_path) as process:
        yield process


def engine_json(engine: Engine, jail) -> dict:
    """What `inspect --json` would give of a tunnel jail, enough for the human page."""
    tunnel = engine.tunnel_status(jail)
    return {"name": jail.name, "owner_uid": 0, "address": jail.address, "netns": jail.netns, "vpn": None,
            "dns": list(jail.dns), "publish": [], "deny": [], "no_lan": False, "keep": False, "pids": [],
            "counters": engine.tunnel_counters(jail), "tunnel": tunnel,
            "vpn_up": tunnel["up"]}
