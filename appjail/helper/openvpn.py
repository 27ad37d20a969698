"""A jail's own OpenVPN tunnel: openvpn as root in the host namespace, its tun device moved in.

The namespaced-openvpn technique. openvpn runs in the helper's namespace,
so its encrypted UDP or TCP socket lives there; it is told to make its tun
device `aj-NAME` and to configure nothing itself (`--ifconfig-noexec
--route-noexec`). When the tunnel is up its `--up` hook (appjail's own,
ovpnhook: a fixed argv, nothing from the user's file) hands the pushed
settings to the helper through a socket in a root-only directory; the
helper checks them (ovpnconf.parse_up), moves the device into the jail and
configures it there, where it is the only interface beside lo. On every
reconnect openvpn opens a new device and the hook runs again. When the
tunnel is down there is no device in the jail: nothing to route to.

Why a hook and not the management interface: the management interface
reports the tunnel's state but not its netmask or the pushed DNS servers,
and openvpn waits for the hook, so the device is never used before the
helper configured it (nor configured by anything else).

The configuration reaches openvpn on its standard input (`--config stdin`),
keys inline: no file, no argv. Its log (stdout and stderr) goes to the
helper's log, line by line. The daemon is the helper's child and lives as
long as the jail; it is not adopted by a later helper (its log and hook
went with the old one): reconcile stops it.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shlex
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from pyroute2 import IPRoute

from .. import ovpnconf
from ..model import ValidationError
from . import netns, tunnels
from .netns import NetnsError

log = logging.getLogger(__name__)

DAEMON = "openvpn"
SOCKET_DIR = Path("/run/appjail/openvpn")  # machine-wide, like the aj-* namespaces the names come from
CONNECT_TIMEOUT = 20.0
MAX_REPORT = 64 * 1024
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

Up = Callable[[ovpnconf.Up], None]
Changed = Callable[[], None]


class Daemon:
    """One openvpn process, its log reader and its hook's socket, served by one thread."""

    def __init__(self, ifname: str, config_text: str, on_up: Up, on_change: Changed) -> None:
        self.ifname = ifname
        self.on_up = on_up
        self.on_change = on_change
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.stopping = False
        self.last_lines: deque[str] = deque(maxlen=3)
        self.since = 0.0  # when the tunnel last came up
        self.remote = ""
        self.socket_path = _socket_dir() / f"{ifname}.sock"
        self.socket_path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.listener.bind(str(self.socket_path))
            self.listener.listen(4)
            self.proc = subprocess.Popen(argv(ifname, self.socket_path), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_ENV,
                                         start_new_session=True)
        except BaseException:
            self._close_socket()
            raise
        self.thread = threading.Thread(target=self._serve, name=f"appjail-{ifname}", daemon=True)
        self.thread.start()
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(config_text.encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # it ended at once: its log says why

    def _serve(self) -> None:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ, "log")
            selector.register(self.listener, selectors.EVENT_READ, "hook")
            pending = b""
            while True:
                for key, _ in selector.select():
                    if key.data == "hook":
                        self._answer_hook()
                        continue
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    if not chunk:
                        self._ended()
                        return
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        text = line.decode(errors="replace").rstrip()
                        self.last_lines.append(text)
                        log.info("openvpn %s: %s", self.ifname, text)

    def _answer_hook(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                     struct.calcsize("3i")))
                if uid != 0 or _parent(pid) != self.proc.pid:
                    raise ValidationError(f"a report from pid {pid}, not from this jail's openvpn, is ignored")
                data = conn.makefile("rb").readline(MAX_REPORT)
                up = ovpnconf.parse_up(json.loads(data))
                if up.ifname != self.ifname:
                    raise ValidationError(f"openvpn reported device {up.ifname!r}, not {self.ifname}")
                self.on_up(up)
            except Exception as exc:
                log.warning("openvpn %s: the tunnel was not set up in the jail: %s", self.ifname, exc)
                _send(conn, b"error\n")
                return
            self.since, self.remote = time.time(), up.remote
            log.info("openvpn %s: tunnel up in the jail, %s via %s", self.ifname,
                     ", ".join(map(str, up.addresses)), up.remote or "?")
            _send(conn, b"ok\n")
            self.connected.set()
        self.on_change()

    def _ended(self) -> None:
        status = self.proc.wait()
        if not self.stopping:
            log.warning("openvpn %s ended (status %s): the jail has no way out", self.ifname, status)
        self._close_socket()
        self.ended.set()
        self.on_change()

    def _close_socket(self) -> None:
        self.listener.close()
        self.socket_path.unlink(missing_ok=True)

    def alive(self) -> bool:
        return not self.ended.is_set()

    def stop(self) -> None:
        self.stopping = True
        tunnels.terminate(self.proc.pid)
        self.thread.join(tunnels.STOP_TIMEOUT)
        if self.thread.is_alive():  # a hook still answering: its socket goes anyway
            self._close_socket()

    def why_not(self) -> str:
        return "; ".join(self.last_lines) or "no output"


def _send(conn: socket.socket, answer: bytes) -> None:
    try:
        conn.sendall(answer)
    except OSError:
        pass


def _parent(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(text.rpartition(")")[2].split()[1])


def _socket_dir() -> Path:
    """/run/appjail/openvpn, root's alone: only openvpn's hook, as root, reaches the helper there."""
    SOCKET_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(SOCKET_DIR)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise NetnsError(f"{SOCKET_DIR} is not root's directory")
    os.chmod(SOCKET_DIR, 0o700)
    return SOCKET_DIR


def hook_command(socket_path: Path) -> str:
    """The `--up` command: this interpreter, isolated, running ovpnhook with the jail's socket."""
    for part in (sys.executable, str(socket_path)):
        if any(c.isspace() or c in "\"'\\" for c in part):
            raise NetnsError(f"cannot hand {part!r} to openvpn as a hook")
    return shlex.join([sys.executable, "-I", "-m", "appjail.helper.ovpnhook", str(socket_path)])


def argv(ifname: str, socket_path: Path) -> list[str]:
    """openvpn's fixed command line: the file's directives come from stdin first, these win."""
    return [DAEMON, "--config", "stdin", "--dev", ifname, "--dev-type", "tun", "--disable-dco",
            "--ifconfig-noexec", "--route-noexec", "--script-security", "2",
            "--up", hook_command(socket_path), "--verb", "3", "--suppress-timestamps"]


_daemons: dict[str, Daemon] = {}
_lock = threading.Lock()


def start(ifname: str, config_text: str, on_up: Up, on_change: Changed) -> None:
    """Start IFNAME's openvpn and return: it connects in its own time.

    On its thread, on_up(settings) is called each time its tunnel comes up
    (and may refuse it by raising), on_change() after the tunnel came up or
    the daemon ended.
    """
    with _lock:
        if ifname in _daemons or _dev_of_running().get(ifname):
            raise NetnsError(f"an openvpn for {ifname} already runs")
        _daemons[ifname] = Daemon(ifname, config_text, on_up, on_change)


def connected(ifname: str) -> bool:
    """Whether IFNAME's tunnel has come up (in the jail) at least once."""
    daemon = _daemons.get(ifname)
    return daemon is not None and daemon.connected.is_set()


def why_not(ifname: str) -> str:
    """openvpn's last words, to say why a tunnel is not up."""
    daemon = _daemons.get(ifname)
    return daemon.why_not() if daemon is not None else "no openvpn runs for it"


def remove(ipr: IPRoute, namespace: str, ifname: str) -> None:
    """Stop IFNAME's openvpn (its device goes with it), then delete the link wherever it is left."""
    with _lock:
        daemon = _daemons.pop(ifname, None)
    if daemon is not None:
        daemon.stop()
    for pid in _dev_of_running().get(ifname, []):
        tunnels.terminate(pid)
    tunnels.remove(ipr, namespace, ifname)


def present(namespace: str, ifname: str) -> bool:
    """Whether this helper's openvpn serves the jail's tunnel: one of an earlier helper is not adopted."""
    daemon = _daemons.get(ifname)
    return daemon is not None and daemon.alive()


def sweep(prefix: str, live_ifnames: Iterable[str]) -> list[str]:
    """Stop openvpn daemons of this namespace serving PREFIX* devices no jail has; remove their sockets."""
    live = set(live_ifnames)
    removed = []
    with _lock:
        ours = [_daemons.pop(name) for name in list(_daemons) if name.startswith(prefix) and name not in live]
    for daemon in ours:
        daemon.stop()
        removed.append(daemon.ifname)
    for ifname, pids in sorted(_dev_of_running().items()):
        if ifname.startswith(prefix) and ifname not in live:
            for pid in pids:
                tunnels.terminate(pid)
            removed.append(ifname)
    if SOCKET_DIR.is_dir():
        for path in sorted(SOCKET_DIR.glob(f"{prefix}*.sock")):
            if path.name[:-len(".sock")] not in live:
                path.unlink(missing_ok=True)
                removed.append(str(path))
    return sorted(set(removed))


def _dev_of_running() -> dict[str, list[int]]:
    """openvpn processes of the calling thread's namespace, by the --dev they serve."""
    def dev(args: list[bytes]) -> str | None:
        return args[args.index(b"--dev") + 1].decode(errors="replace") if b"--dev" in args[:-1] else None
    return tunnels.processes(DAEMON, dev)


def status(namespace: str, ifname: str) -> dict:
    """The tunnel as `inspect` shows it: where it is connected, since when, bytes, up."""
    daemon = _daemons.get(ifname)
    link_up = netns.run_in_namespace(namespace, lambda: netns.link_is_up(ifname))
    counters = tunnels.counters(namespace, ifname)
    running = daemon is not None and daemon.alive()
    return {"connected_to": daemon.remote if daemon else "", "connected_since": int(daemon.since) if daemon else 0,
            "rx_bytes": counters.get("rx_bytes", 0), "tx_bytes": counters.get("tx_bytes", 0),
            "daemon": "running" if running else "ended", "link_up": link_up, "up": running and link_up}


counters = tunnels.counters
