"""The launcher as root: a real network namespace and a real unprivileged user.

Nothing here changes the machine's own namespaces: the jail is a namespace
of our own, and the tests that need a different /etc or /run build them in
a forked child's private mount namespace (an overlay over /etc, a tmpfs
over /run), so the real files are never touched, not even for a moment.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from appjail.helper.kernel.launch import Identity, LaunchError, LaunchRequest, launch
from appjail.lab.bus import bus_config
from appjail.lab.process import child_env, stop, wait_for_output
from appjail.lab.servers import READY, read_log

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, mounts and a test user"),
]

NETNS = "ajlt-launch"
USER = "ajt-launch"
EXTRA_GROUP = "ajt-launch-x"
PYTHON = "/usr/bin/python3"
PATH = b"/usr/local/bin:/usr/bin:/bin"
JAIL_RESOLV = "nameserver 192.0.2.53\n"
JAIL_NSSWITCH = "hosts: files dns\n"
HIDDEN = ("/run/systemd/resolve", "/run/nscd", "/run/avahi-daemon")

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_MS_SHARED = 1 << 20
_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_CAP_NET_RAW = 13


@dataclass(frozen=True)
class Jail:
    netns_path: str
    resolver_dir: str
    caller: Identity


@dataclass(frozen=True)
class Result:
    status: int
    out: str
    err: str


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def _run_quietly(*command: str) -> None:
    subprocess.run(command, capture_output=True)


@pytest.fixture(scope="module")
def netns_path() -> Iterator[str]:
    _run_quietly("ip", "netns", "del", NETNS)  # left over from an interrupted run
    _run("ip", "netns", "add", NETNS)
    try:
        _run("ip", "-n", NETNS, "link", "set", "lo", "up")
        yield f"/run/netns/{NETNS}"
    finally:
        _run("ip", "netns", "del", NETNS)


def _remove_test_user() -> None:
    _run_quietly("userdel", USER)  # also removes the user's own group
    _run_quietly("groupdel", EXTRA_GROUP)


@pytest.fixture(scope="module")
def caller() -> Iterator[Identity]:
    _remove_test_user()
    try:
        _run("groupadd", EXTRA_GROUP)
        _run("useradd", "--no-create-home", "--user-group", "--groups", EXTRA_GROUP,
             "--shell", "/usr/sbin/nologin", USER)
        entry = pwd.getpwnam(USER)
        yield Identity(entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(USER, entry.pw_gid)))
    finally:
        _remove_test_user()


@pytest.fixture(scope="module")
def jail(netns_path: str, caller: Identity, tmp_path_factory: pytest.TempPathFactory) -> Jail:
    # Under pytest's root-only tmp dir: the user never reads it through its path.
    resolver_dir = tmp_path_factory.mktemp("resolver")
    (resolver_dir / "resolv.conf").write_text(JAIL_RESOLV)
    (resolver_dir / "nsswitch.conf").write_text(JAIL_NSSWITCH)
    return Jail(netns_path, str(resolver_dir), caller)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory in /tmp the test user can traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="ajt-launch-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def parent_signals() -> Iterator[None]:
    """The launching thread ignores SIGPIPE and SIGUSR2 and blocks SIGUSR1."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN)
                for signum in (signal.SIGPIPE, signal.SIGUSR2)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_jailed(jail: Jail, argv: list[str], *, cwd: bytes = b"/",
               env: dict[bytes, bytes] | None = None, stdin: int | None = None,
               netns_path: str | None = None, hide_system_bus: bool = False) -> Result:
    """Launch with pipes as stdout and stderr (and /dev/null or `stdin` as 0); wait for it."""
    with ExitStack() as stack:
        def pipe() -> tuple[int, int]:
            read_end, write_end = os.pipe()
            stack.callback(os.close, read_end)
            return read_end, write_end

        out_read, out_write = pipe()
        err_read, err_write = pipe()
        with ExitStack() as parent_copies:
            for fd in (out_write, err_write):
                parent_copies.callback(os.close, fd)
            if stdin is None:
                stdin = os.open(os.devnull, os.O_RDONLY)
                parent_copies.callback(os.close, stdin)
            request = LaunchRequest(
                netns_path=netns_path or jail.netns_path, resolver_dir=jail.resolver_dir,
                argv=[os.fsencode(arg) for arg in argv], env=env or {b"PATH": PATH},
                cwd=cwd, fds=[stdin, out_write, err_write], hide_system_bus=hide_system_bus)
            pid = launch(request, jail.caller)
        out, err = _read(out_read), _read(err_read)
        _, status = os.waitpid(pid, 0)
    return Result(os.waitstatus_to_exitcode(status), out, err)


def _read(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def run_python(jail: Jail, script: str, *args: str, **options) -> dict:
    """Run `script` with the system's python as the user; it prints one JSON object."""
    result = run_jailed(jail, [PYTHON, "-I", "-c", script, *args], **options)
    assert result.status == 0, result.err
    return json.loads(result.out)


def _status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _zombie_children() -> list[int]:
    """Children of this process that exited and were not reaped."""
    zombies = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z" and int(ppid) == os.getpid():
            zombies.append(int(entry.name))
    return zombies


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [line.split()[4] for line in mountinfo]


def test_runs_as_the_caller_without_privileges_or_inherited_signals(
        jail: Jail, parent_signals: None) -> None:
    result = run_jailed(jail, ["cat", "/proc/self/status"])

    assert result.status == 0, result.err
    fields = _status_fields(result.out)
    caller = jail.caller
    assert fields["Uid"].split() == [str(caller.uid)] * 4
    assert fields["Gid"].split() == [str(caller.gid)] * 4
    assert sorted(map(int, fields["Groups"].split())) == sorted(caller.groups)
    assert len(caller.groups) == 2
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(fields[capabilities], 16) == 0, capabilities
    assert fields["NoNewPrivs"] == "1"
    assert int(fields["SigIgn"], 16) == 0
    assert int(fields["SigBlk"], 16) == 0


def _launch_holding_capabilities(jail: Jail) -> dict:
    """Launch from a process with keep-caps set and an inheritable and ambient
    capability: setresuid() alone would carry it over to the program."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    sets = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2
    if _libc.capget(header, sets) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    sets[2] |= 1 << _CAP_NET_RAW
    if (_libc.capset(header, sets) != 0 or _libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
            or _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_NET_RAW, 0, 0) != 0):
        raise OSError(ctypes.get_errno(), "raise a capability")
    with open("/proc/self/status") as status:
        launcher = _status_fields(status.read())
    jailed = run_jailed(jail, ["cat", "/proc/self/status"])
    return {"launcher": launcher, "jail": _status_fields(jailed.out)}


def test_no_capability_survives_even_from_a_careless_helper(jail: Jail) -> None:
    seen = in_forked_child(lambda: _launch_holding_capabilities(jail))

    for capabilities in ("CapInh", "CapAmb"):
        assert int(seen["launcher"][capabilities], 16) == 1 << _CAP_NET_RAW, capabilities
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(seen["jail"][capabilities], 16) == 0, capabilities


JAIL_VIEW = """
import json, os, socket, sys
print(json.dumps({
    "netns": os.stat("/proc/self/ns/net").st_ino,
    "links": [name for _, name in socket.if_nameindex()],
    "resolv": open("/etc/resolv.conf").read(),
    "nsswitch": open("/etc/nsswitch.conf").read(),
    "cwd": os.getcwd(),
    "marker": os.environ.get("AJT_MARKER"),
    "argv": sys.argv[1:],
}))
"""


def test_program_sees_the_jail(jail: Jail, scratch: Path) -> None:
    home = scratch / "home"
    home.mkdir(mode=0o700)
    os.chown(home, jail.caller.uid, jail.caller.gid)
    mounts_before = _mount_points()

    view = run_python(jail, JAIL_VIEW, "two words", "", cwd=bytes(home),
                      env={b"PATH": PATH, b"AJT_MARKER": b"hello jail"})

    assert view["netns"] == os.stat(jail.netns_path).st_ino
    assert view["links"] == ["lo"]
    assert view["resolv"] == JAIL_RESOLV
    assert view["nsswitch"] == JAIL_NSSWITCH
    assert view["cwd"] == str(home)
    assert view["marker"] == "hello jail"
    assert view["argv"] == ["two words", ""]
    assert _mount_points() == mounts_before  # nothing propagated back to the host


def test_ip_link_shows_only_loopback(jail: Jail) -> None:
    result = run_jailed(jail, ["ip", "-o", "link"], env={b"PATH": PATH + b":/usr/sbin:/sbin"})

    assert result.status == 0, result.err
    assert [line.split(":")[1].strip() for line in result.out.splitlines()] == ["lo"]


def test_only_the_passed_descriptors_are_open(jail: Jail) -> None:
    leak = os.open(os.devnull, os.O_RDONLY)
    try:
        os.set_inheritable(leak, True)
        listing = run_jailed(jail, ["ls", "/proc/self/fd"])
    finally:
        os.close(leak)
    streams = run_jailed(jail, ["sh", "-c", "echo out; echo err >&2"])

    # ls's own directory descriptor is the 3.
    assert sorted(listing.out.split()) == ["0", "1", "2", "3"]
    assert (streams.out, streams.err) == ("out\n", "err\n")


def test_a_missing_stderr_is_dev_null(jail: Jail) -> None:
    out_read, out_write = os.pipe()
    with open(os.devnull, "rb") as stdin, open(out_read, "rb") as out:
        try:
            pid = launch(LaunchRequest(
                netns_path=jail.netns_path, resolver_dir=None,
                argv=[b"readlink", b"/proc/self/fd/2"], env={b"PATH": PATH}, cwd=b"/",
                fds=[stdin.fileno(), out_write]), jail.caller)
        finally:
            os.close(out_write)
        target = out.read()
    os.waitpid(pid, 0)

    assert target == os.fsencode(os.devnull) + b"\n"


CONTROLLING_TERMINAL = """
import json, os
os.close(os.open("/dev/tty", os.O_RDONLY))  # fails without a controlling terminal
print(json.dumps([os.getsid(0) == os.getpid(), os.isatty(0)]))
"""


def test_a_terminal_on_fd_0_becomes_the_controlling_terminal(jail: Jail) -> None:
    master, slave = os.openpty()
    try:
        session = run_python(jail, CONTROLLING_TERMINAL, stdin=slave)
    finally:
        os.close(slave)
        os.close(master)

    assert session == [True, True]


def test_missing_program_is_127(jail: Jail) -> None:
    before = set(_zombie_children())  # an earlier test's, not reaped yet
    with pytest.raises(LaunchError, match="ajt-no-such-program: command not found") as failure:
        run_jailed(jail, ["ajt-no-such-program"])
    assert failure.value.exit_code == 127
    assert set(_zombie_children()) - before == set()  # the failed child was reaped


def test_non_executable_file_is_126(jail: Jail, scratch: Path) -> None:
    script = scratch / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)

    with pytest.raises(LaunchError, match="Permission denied") as failure:
        run_jailed(jail, [str(script)])
    assert failure.value.exit_code == 126


def test_path_is_searched_as_the_user(jail: Jail, scratch: Path) -> None:
    private = scratch / "root-only"
    private.mkdir(mode=0o700)
    program = private / "ajt-private"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)

    with pytest.raises(LaunchError, match=f"{program}: Permission denied") as failure:
        run_jailed(jail, ["ajt-private"], env={b"PATH": bytes(private) + b":" + PATH})
    assert failure.value.exit_code == 126


@pytest.mark.parametrize("mode", [0o700, None])
def test_unenterable_cwd_is_125(jail: Jail, scratch: Path, mode: int | None) -> None:
    cwd = scratch / "cwd"
    if mode is not None:
        cwd.mkdir(mode=mode)

    with pytest.raises(LaunchError, match="cannot enter working directory") as failure:
        run_jailed(jail, ["true"], cwd=bytes(cwd))
    assert failure.value.exit_code == 125


# ---- a fake host /etc and /run, in a private mount namespace ----

def in_forked_child(fn: Callable[[], dict]) -> dict:
    """Run `fn` in a forked child, in a mount namespace of its own; return its (JSON) result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            if _libc.unshare(_CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare the mount namespace")
            _set_propagation(_MS_PRIVATE)
            payload = {"result": fn()}
            status = 0
        except BaseException:
            payload = {"error": traceback.format_exc()}
        finally:
            try:
                with os.fdopen(write_end, "w") as report:
                    json.dump(payload, report)
            finally:
                os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as report:
        payload = json.load(report)
    os.waitpid(pid, 0)
    assert "error" not in payload, payload["error"]
    return payload["result"]


def _set_propagation(kind: int) -> None:
    if _libc.mount(None, b"/", None, _MS_REC | kind, None) != 0:
        raise OSError(ctypes.get_errno(), "change mount propagation")


def _mount(source: str, target: str, fstype: str, options: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), 0, options.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount {fstype} on {target}")


def _listen(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o666)  # as the real daemons' sockets: anyone may connect
    server.listen()
    return server


HIDDEN_VIEW = """
import json, os, socket, sys
def probe(directory):
    if not os.path.isdir(directory):
        return None
    info = os.statvfs(directory)
    return {"entries": os.listdir(directory), "mode": oct(os.stat(directory).st_mode & 0o7777),
            "readonly": bool(info.f_flag & os.ST_RDONLY)}
try:
    socket.socket(socket.AF_UNIX).connect("/run/nscd/socket")
    nscd = "connected"
except OSError as error:
    nscd = error.__class__.__name__
target = sys.argv[1]
print(json.dumps({
    "resolv": open("/etc/resolv.conf").read(),
    "target": open(target).read() if os.path.exists(target) else None,
    "hidden": {d: probe(d) for d in sys.argv[2:]},
    "nscd": nscd,
}))
"""


def _jail_on_a_fake_host(jail: Jail, scratch: Path, resolv_target: str,
                         script: str = HIDDEN_VIEW, args: tuple[str, ...] | None = None) -> dict:
    """In this (private) mount namespace: /etc/resolv.conf -> resolv_target, lookup
    daemons listening in /run; then launch and report what the jail sees and what
    the fake host looks like afterwards."""
    netns_fd = os.open(jail.netns_path, os.O_RDONLY)  # /run/netns is about to be covered
    _mount("tmpfs", "/run", "tmpfs", "mode=0755")
    layer = scratch / "etc-layer"
    layer.mkdir()
    _mount("tmpfs", str(layer), "tmpfs", "mode=0700")
    (layer / "upper").mkdir()
    (layer / "work").mkdir()
    _mount("overlay", "/etc", "overlay",
           f"lowerdir=/etc,upperdir={layer}/upper,workdir={layer}/work")
    os.unlink("/etc/resolv.conf")
    os.symlink(resolv_target, "/etc/resolv.conf")
    os.makedirs("/run/systemd/resolve")
    Path("/run/systemd/resolve/stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    evil = Path("/run/ajt-evil")
    evil.mkdir()
    (evil / "resolv.conf").write_text("nameserver 203.0.113.66\n")
    for path in (evil, evil / "resolv.conf"):
        os.chown(path, jail.caller.uid, jail.caller.gid)
    servers = [_listen(path) for path in ("/run/systemd/resolve/io.systemd.Resolve",
                                          "/run/nscd/socket", "/run/avahi-daemon/socket")]
    # Shared, as systemd makes them: a mount the jail failed to keep to
    # itself would show up here.
    _set_propagation(_MS_SHARED)
    mounts_before = _mount_points()

    view = run_python(jail, script, *(args if args is not None else (resolv_target, *HIDDEN)),
                      netns_path=f"/proc/self/fd/{netns_fd}")
    connections = 0
    for server in servers:
        server.setblocking(False)
        try:
            server.accept()[0].close()
            connections += 1
        except BlockingIOError:
            pass
        server.close()
    return {
        "jail": view,
        "connections": connections,
        "mounts_unchanged": _mount_points() == mounts_before,
        "link": os.readlink("/etc/resolv.conf"),
        "host_hidden": {d: sorted(os.listdir(d)) for d in HIDDEN},
    }


@pytest.fixture
def real_etc_guard() -> Iterator[None]:
    """Prove the machine's own /etc/resolv.conf was never touched."""
    before = (os.lstat("/etc/resolv.conf"), Path("/etc/resolv.conf").read_bytes())
    yield
    after = (os.lstat("/etc/resolv.conf"), Path("/etc/resolv.conf").read_bytes())
    assert after == before


@pytest.mark.parametrize("resolv_target", [
    "/run/systemd/resolve/stub-resolv.conf",  # systemd-resolved's stub (in a hidden dir)
    "/run/resolvconf/resolv.conf",            # dangling: the daemon is not running
    "/run/ajt-evil/resolv.conf",              # a file the user controls
    "../run/systemd/resolve/stub-resolv.conf",
])
def test_symlinked_resolv_conf_is_covered_not_followed(
        jail: Jail, scratch: Path, real_etc_guard: None, resolv_target: str) -> None:
    seen = in_forked_child(lambda: _jail_on_a_fake_host(jail, scratch, resolv_target))

    assert seen["jail"]["resolv"] == JAIL_RESOLV
    if resolv_target.startswith("/run/ajt-evil"):
        assert seen["jail"]["target"] == "nameserver 203.0.113.66\n"  # not covered
    else:
        assert seen["jail"]["target"] is None  # hidden or missing
    assert seen["link"] == resolv_target
    assert seen["mounts_unchanged"]


def test_host_lookup_sockets_are_hidden(jail: Jail, scratch: Path, real_etc_guard: None) -> None:
    seen = in_forked_child(
        lambda: _jail_on_a_fake_host(jail, scratch, "/run/systemd/resolve/stub-resolv.conf"))

    for directory in HIDDEN:
        assert seen["jail"]["hidden"][directory] == {
            "entries": [], "mode": "0o755", "readonly": True}, directory
    assert seen["jail"]["nscd"] == "FileNotFoundError"
    # The fake host still has its sockets: nothing was hidden outside the jail.
    assert seen["host_hidden"] == {
        "/run/systemd/resolve": ["io.systemd.Resolve", "stub-resolv.conf"],
        "/run/nscd": ["socket"], "/run/avahi-daemon": ["socket"]}
    assert seen["mounts_unchanged"]


SYSTEM_BUS_CALL = ["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                   "/org/freedesktop/DBus", "org.freedesktop.DBus.GetId"]


def test_no_system_bus_hides_the_system_bus(jail: Jail, scratch: Path, real_etc_guard: None) -> None:
    config = scratch / "system.conf"
    config.write_text(bus_config(Path("/run/dbus/system_bus_socket")))

    def on_a_host_with_a_system_bus() -> dict:
        # this mount namespace's /run/dbus: a system bus that every user may use
        _mount("tmpfs", "/run/dbus", "tmpfs", "mode=0755")
        daemon = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile", "--nosyslog",
                                   f"--config-file={config}", "--print-address=1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            wait_for_output(daemon, daemon.stdout, b"\n", "dbus-daemon", Path("/dev/null"))
            return {str(hide): run_jailed(jail, SYSTEM_BUS_CALL, hide_system_bus=hide).__dict__
                    for hide in (False, True)}
        finally:
            stop(daemon)

    seen = in_forked_child(on_a_host_with_a_system_bus)
    assert seen["False"]["status"] == 0, seen["False"]
    assert seen["True"]["status"] != 0
    assert "/run/dbus/system_bus_socket" in seen["True"]["err"], seen["True"]


GETENT = """
import json, subprocess, sys
lookup = subprocess.run(["getent", "hosts", sys.argv[1]], capture_output=True, text=True)
print(json.dumps({"status": lookup.returncode, "out": lookup.stdout}))
"""


@pytest.fixture
def jail_dns_server(netns_path: str, tmp_path: Path) -> Iterator[Path]:
    """The jail's nameserver (JAIL_RESOLV), inside the jail's own namespace; yields its query log."""
    log = tmp_path / "dns.jsonl"
    _run("ip", "-n", NETNS, "address", "add", "192.0.2.53/32", "dev", "lo")
    server = subprocess.Popen(
        ["ip", "netns", "exec", NETNS, sys.executable, "-m", "appjail.lab.servers", "dns",
         "--bind", "192.0.2.53", "--zone", "lab.test", "--answer", "192.0.2.80", "--log", str(log)],
        stdout=subprocess.PIPE, env=child_env())
    try:
        wait_for_output(server, server.stdout, READY.encode(), "the jail's DNS server")
        yield log
    finally:
        stop(server)
        _run("ip", "-n", NETNS, "address", "del", "192.0.2.53/32", "dev", "lo")


def test_names_resolve_through_the_jails_server_only_on_a_stub_resolver_host(
        jail: Jail, scratch: Path, real_etc_guard: None, jail_dns_server: Path) -> None:
    seen = in_forked_child(lambda: _jail_on_a_fake_host(
        jail, scratch, "/run/systemd/resolve/stub-resolv.conf", GETENT, ("www.lab.test",)))
    assert seen["jail"] == {"status": 0, "out": "192.0.2.80      www.lab.test\n"}
    assert {q["name"].rstrip(".") for q in read_log(jail_dns_server)} == {"www.lab.test"}
    assert seen["connections"] == 0  # resolved, nscd and avahi stand-ins were never asked
