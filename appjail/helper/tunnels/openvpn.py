"""A jail's own OpenVPN tunnel: openvpn unprivileged in the host namespace, its tun device moved in.

The namespaced-openvpn technique. openvpn runs in the helper's namespace,
so its encrypted UDP or TCP socket lives there, as the tunnel user with no
capability (tundaemon): a file that slipped something past the allow-list
still runs nothing as root. The helper makes the tun device `aj-NAME`,
persistent and owned by that user, for openvpn to attach to; openvpn
configures nothing itself (`--ifconfig-noexec --route-noexec`), binds no
port (`--nobind`) and keeps the device across reconnections
(`--persist-tun`: reopening it would need a capability). When the tunnel is
up, and again after each reconnection (`--up-restart`), its `--up` hook
(appjail's own, ovpnhook, a root-owned copy: a fixed argv, nothing from the
user's file) hands the pushed settings to the helper through a socket only
the tunnel user's group may open; the helper checks them
(ovpnconf.parse_up), moves the device into the jail and configures it
there, where it is the only interface beside lo. When the tunnel goes
down (a reconnection: `--up-restart` runs the hooks again) or openvpn
closes the device (pushed settings changed: it opens it anew, which it can
only in its own namespace), its `--down` hook has the helper take the
device out of the jail, and the next `--up` moves it in again: while
openvpn reconnects the jail has only lo.

Why a hook beside the management interface: the management interface
reports the tunnel's state but not its netmask or the pushed DNS servers,
and openvpn waits for the hook, so the device is never used before the
helper configured it (nor configured by anything else).

The configuration reaches openvpn on its standard input (`--config stdin`),
keys inline: no file, no argv, never stored. The helper that starts it
reads its output (stdout and stderr: options errors come before anything
else exists) into its log, line by line, and follows its state (connected
to, since) through its management interface, a unix socket in a directory of
the tunnel user's (`--management PATH unix`, `state on all`), whose peer
must be the daemon's own pid. What reaches a member of openvpn's output is
one of a fixed set of sentences (`why_not`): a line of openvpn's could
quote what it read.

openvpn runs in a session of its own and outlives a helper that crashes or
restarts, like a NAT or WireGuard jail. Its output pipe then has no reader:
openvpn ignores SIGPIPE and carries on, its writes failing (checked with
openvpn 2.6). A later helper adopts it (`adopt`, from reconcile, for a jail
whose record says it had connected and whose daemon still runs): it listens
on the hook's socket again (the hook retries while nobody does, so a
reconnection in between still reaches it), and takes the log from the
management interface too (`log on all`: openvpn's recent lines, marked
earlier, then each as it comes). Until a reconnection's hook is answered
the device carries nothing: nothing leaks. The daemon is known by its
record (tundaemon), never by its name; a daemon whose jail has no record,
or a jail whose daemon is gone, is swept.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shlex
import socket
import shutil
import stat
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from pyroute2 import IPRoute

from ... import ovpnconf
from ...model import ValidationError
from . import ovpnhook, tundaemon, wireguard
from ..kernel import netns
from ..kernel.netns import NetnsError

log = logging.getLogger(__name__)

DAEMON = "openvpn"
SOCKET_DIR = Path("/run/appjail/openvpn")  # machine-wide, like the aj-* namespaces the names come from
# SOCKET_DIR/aj-NAME.sock: the hook's (the helper listens); aj-NAME.d/management: openvpn's own, in a
# directory of the tunnel user's; hook.py: the hook, root's
HOOK, MANAGEMENT = ".sock", ".d"
HOOK_SCRIPT = "hook.py"
CONNECT_TIMEOUT = 20.0
ATTACH_RETRY = 0.05  # s between attempts to reach a starting openvpn's management socket
MAX_REPORT = 64 * 1024
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

Up = Callable[[ovpnconf.Up], None]
Changed = Callable[[], None]


class Daemon:
    """One openvpn process and the thread that serves it: its hook's socket, its management
    interface (state; the log of one an earlier helper started) and the output of one started here."""

    def __init__(self, ifname: str, listener: socket.socket, identity: tundaemon.ProcessStamp, pidfd: int,
                 on_up: Up, on_change: Changed, proc: subprocess.Popen[bytes] | None = None) -> None:
        """proc: the process when this helper started it (None: adopted, its tunnel came up before)."""
        self.ifname = ifname
        self.listener = listener
        self.paths = {kind: _path(ifname, kind) for kind in (HOOK, MANAGEMENT)}
        self.identity = identity
        self.pid = identity.pid
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
        self.pidfd = pidfd
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
            management.connect(str(self.paths[MANAGEMENT] / "management"))
            if _peer(management)[0] != self.pid:  # the tunnel user's directory: only openvpn's own will do
                raise OSError("not this jail's openvpn")
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
                pid, uid = _peer(conn)
                if uid != tundaemon.account()[0] or _parent(pid) != self.pid:
                    raise ValidationError(f"a report from pid {pid}, not from this jail's openvpn, is ignored")
                report = json.loads(conn.makefile("rb").readline(MAX_REPORT))
                if isinstance(report, dict) and report.get("script_type") == "down":
                    self._device_closed()
                    _send(conn, b"ok\n")
                    return
                up = ovpnconf.parse_up(report)
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

    def _device_closed(self) -> None:
        """openvpn closed its device: to open it again (new pushed settings) it must find it in its own
        namespace, where it made it (a jail's namespace and tunnel share the name aj-NAME)."""
        if not self.stopping:
            wireguard.move_out(self.ifname, self.ifname)
            log.info("openvpn %s closed its device: back in the host until the tunnel is up again", self.ifname)

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
        _remove_paths(self.ifname)

    def alive(self) -> bool:
        return not self.ended.is_set()

    def stop(self) -> None:
        self.stopping = True
        tundaemon.terminate(self.identity)
        self.thread.join(tundaemon.STOP_TIMEOUT)
        if self.thread.is_alive():  # a hook still answering: its socket goes anyway
            self._close_socket()

    def why_not(self) -> str:
        """Why the tunnel is not up, in a sentence of appjail's own: openvpn's lines stay in the log."""
        return explain(self.last_lines)


# openvpn's words (a fragment of a line) -> what a member is told. Nothing of openvpn's line itself is
# passed on: it could quote a file openvpn read.
REASONS: tuple[tuple[str, str], ...] = (
    ("AUTH_FAILED", "the server refused the user name or password"),
    ("TLS key negotiation failed", "no TLS handshake with the server: is it reachable, and is the file its own?"),
    ("VERIFY ERROR", "the server's certificate does not verify against the file's <ca>"),
    ("certificate verify failed", "the server's certificate does not verify against the file's <ca>"),
    ("Cannot resolve host address", "the server's name does not resolve"),
    ("RESOLVE:", "the server's name does not resolve"),
    ("Connection refused", "the server refused the connection"),
    ("Cannot load", "openvpn could not load a certificate or key of the file"),
    ("Options error", "openvpn refused an option of the file"),
    ("TUNSETIFF", "openvpn could not open the jail's tun device"),
)


def explain(lines: Iterable[str]) -> str:
    """The sentences of REASONS that openvpn's last lines call for, or a pointer to the helper's log."""
    found = dict.fromkeys(reason for line in lines for fragment, reason in REASONS if fragment in line)
    return "; ".join(found) or "openvpn said nothing appjail knows (the helper's log has its words)"


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


def _peer(conn: socket.socket) -> tuple[int, int]:
    """The pid and uid at the other end of a unix socket, from the kernel."""
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
    return pid, uid


def _parent(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(text.rpartition(")")[2].split()[1])


def _socket_dir() -> Path:
    """/run/appjail/openvpn, root's: others may pass through it to what they are given, and list nothing."""
    SOCKET_DIR.mkdir(mode=0o711, parents=True, exist_ok=True)
    for directory in (SOCKET_DIR.parent, SOCKET_DIR):  # /run/appjail: passed through, whatever the umask
        os.chmod(directory, os.lstat(directory).st_mode & 0o777 | 0o711)
    info = os.lstat(SOCKET_DIR)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise NetnsError(f"{SOCKET_DIR} is not root's directory")
    os.chmod(SOCKET_DIR, 0o711)
    return SOCKET_DIR


def _path(ifname: str, kind: str) -> Path:
    """SOCKET_DIR/IFNAME.sock (the hook's, the helper listens) or IFNAME.d (openvpn's management socket's)."""
    return _socket_dir() / f"{ifname}{kind}"


def _remove_paths(ifname: str) -> None:
    """The hook's socket and openvpn's directory (openvpn removes its socket, unless it was killed)."""
    _path(ifname, HOOK).unlink(missing_ok=True)
    shutil.rmtree(_path(ifname, MANAGEMENT), ignore_errors=True)


def _listen(path: Path) -> socket.socket:
    """The hook's socket: root's, which only the tunnel user's group (openvpn's hook) may open."""
    path.unlink(missing_ok=True)  # an earlier helper's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        listener.bind(str(path))
        os.chown(path, 0, tundaemon.account()[1], follow_symlinks=False)
        os.chmod(path, 0o660, follow_symlinks=False)
        listener.listen(4)
    except BaseException:
        listener.close()
        raise
    return listener


def _management_dir(ifname: str) -> Path:
    """A new directory for openvpn's management socket, the tunnel user's alone."""
    path = _path(ifname, MANAGEMENT)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    os.chown(path, *tundaemon.account(), follow_symlinks=False)
    return path


def _hook_script() -> Path:
    """ovpnhook's code as a root-owned file the tunnel user may run (the helper's own tree may be closed
    to that user)."""
    path = _socket_dir() / HOOK_SCRIPT
    partial = path.with_suffix(".new")
    partial.write_bytes(Path(ovpnhook.__file__).read_bytes())
    os.chmod(partial, 0o644)
    partial.replace(path)
    return path


def hook_command(socket_path: Path) -> str:
    """The `--up` command: the system's interpreter, isolated, running the hook with the jail's socket."""
    python = os.path.realpath(sys.executable)  # a venv's python is a link into a tree others may not enter
    for part in (python, str(socket_path)):
        if any(c.isspace() or c in "\"'\\" for c in part):
            raise NetnsError(f"cannot hand {part!r} to openvpn as a hook")
    return shlex.join([python, "-I", str(_hook_script()), str(socket_path)])


def place(namespace: str, ifname: str, up: ovpnconf.Up) -> None:
    """openvpn's device IFNAME, up and unconfigured: into the jail NAMESPACE, configured as the server
    pushed (UP: the hook's report), on every (re)connection."""
    with netns.rtnl() as ipr:
        wireguard.place(ipr, ifname, namespace, up.addresses, up.routes(), up.mtu, up.ipv6)


def argv(ifname: str) -> list[str]:
    """openvpn's fixed command line: the file's directives come from stdin first, these win."""
    return [DAEMON, "--config", "stdin", "--dev", ifname, "--dev-type", "tun", "--dev-node", str(tundaemon.tun_node()),
            "--disable-dco",
            "--ifconfig-noexec", "--route-noexec", "--nobind", "--persist-tun", "--script-security", "2",
            "--up", hook_command(_path(ifname, HOOK)), "--up-restart", "--down", hook_command(_path(ifname, HOOK)),
            "--management", str(_path(ifname, MANAGEMENT) / "management"), "unix",
            "--verb", "3", "--suppress-timestamps"]


_daemons: dict[str, Daemon] = {}
_lock = threading.Lock()


def start(ifname: str, config_text: str, on_up: Up, on_change: Changed) -> None:
    """Start IFNAME's openvpn, as the tunnel user on a device made for it, and return: it connects in its
    own time.

    On its thread, on_up(settings) is called each time its tunnel comes up
    (and may refuse it by raising), on_change() after the tunnel came up or
    the daemon ended.
    """
    with _lock:
        if ifname in _daemons or tundaemon.recorded(DAEMON, ifname):
            raise NetnsError(f"an openvpn for {ifname} already runs")
        command = tundaemon.command(argv(ifname))
        tundaemon.make_tun(ifname)
        listener = _listen(_path(ifname, HOOK))
        try:
            _management_dir(ifname)
            # its own session: it outlives this helper, for the next one to adopt
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=_ENV, start_new_session=True)
        except BaseException:
            listener.close()
            _remove_paths(ifname)
            raise
        identity = tundaemon.started(proc.pid)
        tundaemon.record(DAEMON, ifname, identity)
        _daemons[ifname] = Daemon(ifname, listener, identity, os.pidfd_open(proc.pid), on_up, on_change, proc)
    try:
        assert proc.stdin is not None
        proc.stdin.write(config_text.encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it ended at once: its output says why


def adopt(ifname: str, on_up: Up, on_change: Changed) -> None:
    """Serve IFNAME's openvpn again, one an earlier helper started and recorded: its hook, log and state
    from now on.

    Nothing when this helper serves it already, or it is gone (the jail is then swept as one without a way out).
    """
    with _lock:
        identity = tundaemon.recorded(DAEMON, ifname)
        pidfd = tundaemon.pidfd(identity) if identity is not None and ifname not in _daemons else None
        if pidfd is None:
            return
        listener = _listen(_path(ifname, HOOK))
        _daemons[ifname] = Daemon(ifname, listener, identity, pidfd, on_up, on_change)
    log.info("openvpn %s (pid %d) adopted: its hook, log and state are this helper's", ifname, identity.pid)


def connected(ifname: str) -> bool:
    """Whether IFNAME's tunnel has come up (in the jail) at least once."""
    daemon = _daemons.get(ifname)
    return daemon is not None and daemon.connected.is_set()


def daemon_pid(ifname: str) -> int | None:
    daemon = _daemons.get(ifname)
    return daemon.pid if daemon is not None else None


def why_not(ifname: str) -> str:
    """Why IFNAME's tunnel is not up, in appjail's words."""
    daemon = _daemons.get(ifname)
    return daemon.why_not() if daemon is not None else "no openvpn runs for it"


def remove(ipr: IPRoute, namespace: str, ifname: str) -> None:
    """Stop IFNAME's openvpn, then delete its device wherever it is."""
    with _lock:
        daemon = _daemons.pop(ifname, None)
    if daemon is not None:
        daemon.stop()
    tundaemon.stop(DAEMON, ifname)
    _remove_paths(ifname)
    wireguard.delete_device(ipr, namespace, ifname)


def present(namespace: str, ifname: str) -> bool:
    """Whether an openvpn serves the jail's tunnel: this helper's, or one an earlier helper started."""
    daemon = _daemons.get(ifname)
    return daemon.alive() if daemon is not None else tundaemon.recorded(DAEMON, ifname) is not None


def sweep(prefix: str, live_ifnames: Iterable[str]) -> list[str]:
    """Stop openvpn daemons serving PREFIX* devices no jail has, and the tunnel user's unrecorded processes;
    remove their sockets."""
    live = set(live_ifnames)
    removed = []
    with _lock:
        ours = [_daemons.pop(name) for name in list(_daemons) if name.startswith(prefix) and name not in live]
    for daemon in ours:
        daemon.stop()
        removed.append(daemon.ifname)
    removed += tundaemon.sweep(DAEMON, prefix, live)
    wireguard.delete_devices([name for name in removed if name.startswith(prefix)])
    if SOCKET_DIR.is_dir():
        for path in sorted(SOCKET_DIR.glob(f"{prefix}*")):
            if path.suffix in (HOOK, MANAGEMENT) and path.stem not in live:
                _remove_paths(path.stem)
                removed.append(str(path))
    return sorted(set(removed))


def status(namespace: str, ifname: str) -> dict:
    """The tunnel as `inspect` shows it: up or down, openvpn's own state, where it is connected, since when,
    bytes."""
    daemon = _daemons.get(ifname)
    link_up = netns.run_in_namespace(namespace, lambda: netns.link_is_up(ifname))
    counters = wireguard.counters(namespace, ifname)
    running = daemon is not None and daemon.alive()
    up = running and link_up and daemon.state == "CONNECTED"  # its device stays while it reconnects
    return {"state": wireguard.UP if up else wireguard.DOWN, "openvpn_state": daemon.state if running else "",
            "connected_to": daemon.remote if running else "", "connected_since": daemon.since if running else 0,
            "rx_bytes": counters.get("rx_bytes", 0), "tx_bytes": counters.get("tx_bytes", 0),
            "daemon": "running" if running else "ended", "link_up": link_up, "up": up}


counters = wireguard.counters
