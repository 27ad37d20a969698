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

Why a hook beside the management interface: the management interface
reports the tunnel's state but not its netmask or the pushed DNS servers,
and openvpn waits for the hook, so the device is never used before the
helper configured it (nor configured by anything else).

The configuration reaches openvpn on its standard input (`--config stdin`),
keys inline: no file, no argv, never stored. The helper that starts it
reads its output (stdout and stderr: options errors come before anything
else exists) into its log, line by line, and follows its state (connected
to, since) through its management interface, a unix socket beside the
hook's (`--management PATH unix`, `state on all`).

openvpn runs in a session of its own and outlives a helper that crashes or
restarts, like a NAT or WireGuard jail. Its output pipe then has no reader:
openvpn ignores SIGPIPE and carries on, its writes failing (checked with
openvpn 2.6). A later helper adopts it (`adopt`, from reconcile, for a jail
whose record says it had connected and whose daemon still runs): it listens
on the hook's socket again (the hook retries while nobody does, so a
reconnection in between still reaches it), and takes the log from the
management interface too (`log on all`: openvpn's recent lines, marked
earlier, then each as it comes). Until a reconnection's hook is answered
there is no device in the jail: nothing leaks. A daemon whose jail has no
record, or a jail whose daemon is gone, is swept.
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
HOOK, MANAGEMENT = ".sock", ".mgmt"  # SOCKET_DIR/aj-NAME.sock: the hook's; aj-NAME.mgmt: openvpn's own
CONNECT_TIMEOUT = 20.0
ATTACH_RETRY = 0.05  # s between attempts to reach a starting openvpn's management socket
MAX_REPORT = 64 * 1024
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

Up = Callable[[ovpnconf.Up], None]
Changed = Callable[[], None]


class Daemon:
    """One openvpn process and the thread that serves it: its hook's socket, its management
    interface (state; the log of one an earlier helper started) and the output of one started here."""

    def __init__(self, ifname: str, listener: socket.socket, pid: int, on_up: Up, on_change: Changed,
                 proc: subprocess.Popen[bytes] | None = None) -> None:
        """proc: the process when this helper started it (None: adopted, its tunnel came up before)."""
        self.ifname = ifname
        self.listener = listener
        self.paths = {kind: _path(ifname, kind) for kind in (HOOK, MANAGEMENT)}
        self.pid = pid
        self.on_up = on_up
        self.on_change = on_change
        self.proc = proc
        self.connected = threading.Event()
        if proc is None:
            self.connected.set()
        self.ended = threading.Event()
        self.stopping = False
        self.last_lines: deque[str] = deque(maxlen=3)
        self.state = ""  # openvpn's own (management interface): CONNECTED, RECONNECTING...
        self.since = 0  # when the current connection was made, 0: none
        self.remote = ""
        self.pidfd = os.pidfd_open(pid)
        self.management: socket.socket | None = None
        self.pending: deque[str] = deque()  # the history each command sent answers with, until END
        self.thread = threading.Thread(target=self._serve, name=f"appjail-{ifname}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ, self._answer_hook)
            selector.register(self.pidfd, selectors.EVENT_READ, None)
            output = _Lines(self.proc.stdout.fileno()) if self.proc is not None and self.proc.stdout else None
            if output is not None:
                selector.register(output.fd, selectors.EVENT_READ, lambda: self._read(output, self._log))
            replies: _Lines | None = None
            while True:
                if self.management is None:
                    replies = self._attach(selector)
                for key, _ in selector.select(None if self.management else ATTACH_RETRY):
                    if key.data is None:  # the process ended: what it wrote last, then the end
                        if output is not None:
                            self._read(output, self._log)
                        return self._ended()
                    key.data()
                if output is not None and output.closed:
                    selector.unregister(output.fd)
                    output = None
                if replies is not None and replies.closed:  # openvpn is ending, most likely
                    selector.unregister(replies.fd)
                    self._detach()
                    replies = None

    def _attach(self, selector: selectors.BaseSelector) -> _Lines | None:
        """Connect to openvpn's management socket (it opens it early, and keeps it while it runs)."""
        management = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            management.connect(str(self.paths[MANAGEMENT]))
        except OSError:
            management.close()
            return None
        self.management = management
        # state: the current one and what follows; an adopted one's log too, this helper's own from now on
        commands = (["log on all"] if self.proc is None else []) + ["state on all"]
        self.pending.extend(command.split()[0] for command in commands)
        management.sendall("".join(f"{command}\n" for command in commands).encode())
        replies = _Lines(management.fileno())
        selector.register(replies.fd, selectors.EVENT_READ, lambda: self._read(replies, self._management_line))
        return replies

    def _detach(self) -> None:
        assert self.management is not None
        self.management.close()
        self.management = None
        self.pending.clear()

    @staticmethod
    def _read(lines: _Lines, handle: Callable[[str], None]) -> None:
        for line in lines.read():
            handle(line)

    def _log(self, text: str, earlier: bool = False) -> None:
        """One line of openvpn's log into the helper's; `earlier`: from its cache, logged before this helper."""
        if text.startswith("MANAGEMENT: "):
            return  # the interface's own chatter: this helper's commands, state echoed
        self.last_lines.append(text)
        log.info("openvpn %s: %s%s", self.ifname, "(earlier) " if earlier else "", text)

    def _management_line(self, line: str) -> None:
        """A real-time notification (>LOG:, >STATE:), a command's answer, or a line of its history."""
        kind, _, rest = line.partition(":")
        if kind == ">LOG":
            self._log(rest.split(",", 2)[-1])
        elif kind == ">STATE":
            self._state(rest)
        elif line == "END" and self.pending:
            self.pending.popleft()
        elif not line.startswith((">", "SUCCESS:", "ERROR:")) and self.pending:
            (self._log(line.split(",", 2)[-1], earlier=True) if self.pending[0] == "log" else self._state(line))

    def _state(self, fields_text: str) -> None:
        """time,NAME,description,local address,remote address,remote port,...: where it is connected."""
        fields = fields_text.split(",")
        if len(fields) < 2 or not fields[0].isdigit():
            return
        self.state = fields[1]
        connected = self.state == "CONNECTED" and len(fields) >= 6
        self.since = int(fields[0]) if connected else 0
        self.remote = f"{fields[4]}:{fields[5]}" if connected else ""

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
                if uid != 0 or _parent(pid) != self.pid:
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
            log.info("openvpn %s: tunnel up in the jail, %s via %s", self.ifname,
                     ", ".join(map(str, up.addresses)), up.remote or "?")
            _send(conn, b"ok\n")
            self.connected.set()
        self.on_change()

    def _ended(self) -> None:
        status: int | str = "unknown: an earlier helper's child"
        if self.proc is not None:
            status = self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if not self.stopping:
            log.warning("openvpn %s ended (status %s): the jail has no way out", self.ifname, status)
        if self.management is not None:
            self._detach()
        os.close(self.pidfd)
        self._close_socket()
        self.ended.set()
        self.on_change()

    def _close_socket(self) -> None:
        self.listener.close()
        for path in self.paths.values():  # openvpn removes its own, unless it was killed
            path.unlink(missing_ok=True)

    def alive(self) -> bool:
        return not self.ended.is_set()

    def stop(self) -> None:
        self.stopping = True
        tunnels.terminate(self.pid)
        self.thread.join(tunnels.STOP_TIMEOUT)
        if self.thread.is_alive():  # a hook still answering: its socket goes anyway
            self._close_socket()

    def why_not(self) -> str:
        return "; ".join(self.last_lines) or "no output"


class _Lines:
    """Lines from a non-blocking descriptor (openvpn's output, its management socket), as they come."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.partial = b""
        self.closed = False

    def read(self) -> list[str]:
        """The complete lines that arrived (without line ends); at end-of-file, the rest too."""
        chunks = []
        while not self.closed:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            self.closed = not chunk
            chunks.append(chunk)
        *lines, self.partial = (self.partial + b"".join(chunks)).split(b"\n")
        if self.closed and self.partial:
            lines, self.partial = [*lines, self.partial], b""
        return [line.decode(errors="replace").rstrip("\r ") for line in lines]


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


def _path(ifname: str, kind: str) -> Path:
    """SOCKET_DIR/IFNAME.sock (the hook's, the helper listens) or IFNAME.mgmt (openvpn's management)."""
    return _socket_dir() / f"{ifname}{kind}"


def _listen(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)  # an earlier helper's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        listener.bind(str(path))
        listener.listen(4)
    except BaseException:
        listener.close()
        raise
    return listener


def hook_command(socket_path: Path) -> str:
    """The `--up` command: this interpreter, isolated, running ovpnhook with the jail's socket."""
    for part in (sys.executable, str(socket_path)):
        if any(c.isspace() or c in "\"'\\" for c in part):
            raise NetnsError(f"cannot hand {part!r} to openvpn as a hook")
    return shlex.join([sys.executable, "-I", "-m", "appjail.helper.ovpnhook", str(socket_path)])


def argv(ifname: str) -> list[str]:
    """openvpn's fixed command line: the file's directives come from stdin first, these win."""
    return [DAEMON, "--config", "stdin", "--dev", ifname, "--dev-type", "tun", "--disable-dco",
            "--ifconfig-noexec", "--route-noexec", "--script-security", "2",
            "--up", hook_command(_path(ifname, HOOK)), "--management", str(_path(ifname, MANAGEMENT)), "unix",
            "--verb", "3", "--suppress-timestamps"]


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
        listener = _listen(_path(ifname, HOOK))
        _path(ifname, MANAGEMENT).unlink(missing_ok=True)  # a killed one's
        try:
            # its own session: it outlives this helper, for the next one to adopt
            proc = subprocess.Popen(argv(ifname), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=_ENV, start_new_session=True)
        except BaseException:
            listener.close()
            raise
        _daemons[ifname] = Daemon(ifname, listener, proc.pid, on_up, on_change, proc)
    try:
        assert proc.stdin is not None
        proc.stdin.write(config_text.encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it ended at once: its output says why


def adopt(ifname: str, on_up: Up, on_change: Changed) -> None:
    """Serve IFNAME's openvpn again, one an earlier helper started: its hook, log and state from now on.

    Nothing when this helper serves it already, or none runs (the jail is then swept as one without a way out).
    """
    with _lock:
        pids = _dev_of_running().get(ifname, [])
        if ifname in _daemons or len(pids) != 1:
            return
        listener = _listen(_path(ifname, HOOK))
        try:
            _daemons[ifname] = Daemon(ifname, listener, pids[0], on_up, on_change)
        except ProcessLookupError:  # it ended just now
            listener.close()
            return
    log.info("openvpn %s (pid %d) adopted: its hook, log and state are this helper's", ifname, pids[0])


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
    """Whether an openvpn serves the jail's tunnel: this helper's, or one an earlier helper started."""
    daemon = _daemons.get(ifname)
    return daemon.alive() if daemon is not None else bool(_dev_of_running().get(ifname))


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
        for path in sorted(SOCKET_DIR.glob(f"{prefix}*")):
            if path.suffix in (HOOK, MANAGEMENT) and path.stem not in live:
                path.unlink(missing_ok=True)
                removed.append(str(path))
    return sorted(set(removed))


def _dev_of_running() -> dict[str, list[int]]:
    """openvpn processes of the calling thread's namespace, by the --dev they serve."""
    def dev(args: list[bytes]) -> str | None:
        return args[args.index(b"--dev") + 1].decode(errors="replace") if b"--dev" in args[:-1] else None
    return tunnels.processes(DAEMON, dev)


def status(namespace: str, ifname: str) -> dict:
    """The tunnel as `inspect` shows it: up or down, openvpn's own state, where it is connected, since when,
    bytes."""
    daemon = _daemons.get(ifname)
    link_up = netns.run_in_namespace(namespace, lambda: netns.link_is_up(ifname))
    counters = tunnels.counters(namespace, ifname)
    running = daemon is not None and daemon.alive()
    up = running and link_up
    return {"state": tunnels.UP if up else tunnels.DOWN, "openvpn_state": daemon.state if running else "",
            "connected_to": daemon.remote if running else "", "connected_since": daemon.since if running else 0,
            "rx_bytes": counters.get("rx_bytes", 0), "tx_bytes": counters.get("tx_bytes", 0),
            "daemon": "running" if running else "ended", "link_up": link_up, "up": up}


counters = tunnels.counters
