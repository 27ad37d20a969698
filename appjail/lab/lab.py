"""A simulated host and internet in two network namespaces, for tests and the demo.

    UPLINK "PREFIX-up" (the internet)              HOST "PREFIX-host" (the machine)
    lo    192.0.2.80 HTTP, 192.0.2.53 DNS,
          2001:db8:2::80 HTTP
    isp0  198.51.100.1/24 2001:db8:1::1/64  <--veth-->  up0 198.51.100.2/24 2001:db8:1::2/64
                                                        default via 198.51.100.1 / 2001:db8:1::1
    PREFIX-wgs 203.0.113.1/24 :51820  <--WireGuard over the veth-->  wg0 203.0.113.2/24
               (wg_peer(): more peers, each with its own key and 203.0.113.x, for tunnel jails)
    openvpn UDP 198.51.100.1:1194, clients 203.0.113.128/26 (ovpn_start(), ovpn_client(): on demand)

The engine under test runs in HOST and NATs its jails out of up0 or wg0. UPLINK
routes only to what is directly connected to it, so it answers nothing that was
not NATed to 198.51.100.2 or 203.0.113.2.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from appjail.helper.kernel import resolv
from appjail.lab import natpmpserver, openvpn, wireguard
from appjail.lab.errors import LabError
from appjail.lab.netns import netns_exec_argv, netns_path, netns_pids
from appjail.lab.process import (
    STOP_TIMEOUT,
    child_env,
    kill_pids,
    run_checked,
    stop,
    wait_for_output,
    wait_for_path,
)
from appjail.lab.servers import READY, read_log

# PREFIX-wgs must fit in an interface name (IFNAMSIZ - 1 = 15 characters).
_PREFIX_RE = re.compile(r"[a-z0-9]{1,11}")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_WORKDIR_PREFIX = "appjail-lab-"


def _names(prefix: str) -> tuple[str, str, str]:
    """(HOST namespace, UPLINK namespace, WireGuard server interface) of a lab prefix."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"lab prefix must be 1-11 lower-case letters or digits, not {prefix!r}")
    return f"{prefix}-host", f"{prefix}-up", f"{prefix}-wgs"


def host_namespace(prefix: str) -> str:
    """The lab's host namespace of a prefix: where a helper of the lab runs, and its users' commands."""
    return _names(prefix)[0]


def _ip(ns: str, *commands: str) -> None:
    """Run `ip` commands in a namespace, all through one `ip -batch`."""
    run_checked(["ip", "-n", ns, "-batch", "-"], input="".join(f"{command}\n" for command in commands))


def _purge_netns(ns: str) -> None:
    """Kill whatever still runs in a namespace, then delete it: a process inside would keep it alive."""
    if not netns_path(ns).exists():
        return
    pids = [pid for pid in netns_pids(ns) if pid != os.getpid()]
    wg_ifnames = [ifname for ifname in map(wireguard.interface_of, pids) if ifname]
    kill_pids(pids)
    for ifname in wg_ifnames:
        wireguard.remove_stale_socket(ifname, wait=STOP_TIMEOUT)
    run_checked(["ip", "netns", "delete", ns])


class DnsTrap:
    """A DNS server in HOST that should never hear from a jail (or a slow one for the helper there)."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path,
                 undo: Callable[[], None] = lambda: None) -> None:
        self._proc = proc
        self._log_path = log_path
        self._undo = undo  # what else its start did

    def log(self) -> list[dict[str, Any]]:
        return read_log(self._log_path)

    def stop(self) -> None:
        try:
            stop(self._proc)
        finally:
            self._undo()


class Capture:
    """A running tcpdump writing a pcap file."""

    def __init__(self, proc: subprocess.Popen[bytes], pcap: Path) -> None:
        self._proc = proc
        self._pcap = pcap

    def stop(self) -> list[str]:
        """Stop capturing and return the packets as `tcpdump -nn` prints them, one line each."""
        stop(self._proc)
        return run_checked(["tcpdump", "-r", str(self._pcap), "-nn"]).splitlines()


class Lab:
    """HOST and UPLINK namespaces with HTTP, DNS and a WireGuard tunnel between them.

    Use as a context manager, or call start() and close(). close() undoes
    whatever start() got done, also after a failure halfway, and may be
    called any number of times.
    """

    HOST_UPLINK_ADDR = "198.51.100.2"
    HOST_UPLINK_ADDR6 = "2001:db8:1::2"
    UPLINK_ADDR = "198.51.100.1"
    UPLINK_ADDR6 = "2001:db8:1::1"
    SERVER_ADDR = "192.0.2.80"
    SERVER6_ADDR = "2001:db8:2::80"
    HTTP_PORT = 80
    DNS_ADDR = "192.0.2.53"
    DNS_PORT = 53
    ZONE = "lab.test"
    WG_SERVER_TUNNEL_ADDR = "203.0.113.1"
    WG_CLIENT_TUNNEL_ADDR = "203.0.113.2"
    WG_PORT = 51820
    NATPMP_PUBLIC_ADDR = "100.128.0.1"  # the VPN gateway's forwarded ports (see natpmpserver.config)
    WG_KEEPALIVE = 25

    def __init__(self, prefix: str = "ajlab", wg_ifname: str = "wg0", workdir: Path | None = None) -> None:
        if not _IFNAME_RE.fullmatch(wg_ifname):
            raise ValueError(f"not a usable interface name: {wg_ifname!r}")
        self.prefix = prefix
        self.host_ns, self.uplink_ns, self.wg_server_ifname = _names(prefix)
        self.wg_ifname = wg_ifname
        self.host_uplink_if = "up0"
        self.uplink_host_if = "isp0"
        self._workdir = workdir
        self._stack = ExitStack()
        self._started = False
        self._procs: list[subprocess.Popen[bytes]] = []
        self._wg_client: subprocess.Popen[bytes] | None = None
        self._serial = itertools.count(1)
        self._server_pub = self._client_pub = ""
        self._peers: list[str] = []  # public keys wg_peer() gave the server
        self._ovpn_server: subprocess.Popen[bytes] | None = None

    # --- life cycle ---------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> Lab:
        if self._started:
            raise LabError("a Lab starts only once")
        self._started = True
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the lab's processes (and kill anything else left in its namespaces), then delete
        the namespaces, its wireguard-go sockets and the workdir it made."""
        self._stack.close()

    @classmethod
    def cleanup_stale(cls, prefix: str) -> None:
        """Remove what a crashed lab with this prefix left: also destroys a running one."""
        host_ns, uplink_ns, wg_server_ifname = _names(prefix)
        for ns in (uplink_ns, host_ns):
            _purge_netns(ns)
        wireguard.remove_stale_socket(wg_server_ifname)
        for workdir in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}{prefix}-*"):
            shutil.rmtree(workdir, ignore_errors=True)

    @property
    def workdir(self) -> Path:
        """Logs, keys and captures; a temporary directory (removed by close()) unless one was given."""
        if self._workdir is None:
            raise LabError("the lab has no workdir before start()")
        return self._workdir

    def _setup(self) -> None:
        self._workdir = self._make_workdir()
        for ns in (self.host_ns, self.uplink_ns):
            self._add_netns(ns)
        self._stack.callback(self._remove_wg_sockets)  # runs after the processes are stopped:
        self._stack.callback(self._stop_processes)  # callbacks run last-in, first-out
        self._build_network()
        http_args = ["--bind", self.SERVER_ADDR, "--bind", self.SERVER6_ADDR, "--port", str(self.HTTP_PORT)]
        http = self._spawn_server(self.uplink_ns, "http", "http", http_args)
        dns = self._spawn_server(self.uplink_ns, "dns", "dns", self._dns_args([self.DNS_ADDR], self.DNS_PORT))
        self._setup_wireguard()
        self._await_server(http, "http")
        self._await_server(dns, "dns")

    def _make_workdir(self) -> Path:
        if self._workdir is not None:
            self._workdir.mkdir(parents=True, exist_ok=True)
            return self._workdir
        workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{self.prefix}-"))
        self._stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        return workdir

    def _add_netns(self, ns: str) -> None:
        try:
            run_checked(["ip", "netns", "add", ns])
        except LabError as exc:
            raise LabError(f"{exc} (left by a crashed lab? Lab.cleanup_stale({self.prefix!r}) removes it)") from exc
        self._stack.callback(_purge_netns, ns)

    def _build_network(self) -> None:
        up, isp = self.host_uplink_if, self.uplink_host_if
        _ip(
            self.uplink_ns,
            "link set lo up",
            f"address add {self.SERVER_ADDR}/32 dev lo",
            f"address add {self.DNS_ADDR}/32 dev lo",
            f"address add {self.SERVER6_ADDR}/128 dev lo nodad",
            f"link add {isp} type veth peer name {up} netns {self.host_ns}",
            f"address add {self.UPLINK_ADDR}/24 dev {isp}",
            f"address add {self.UPLINK_ADDR6}/64 dev {isp} nodad",
            f"link set {isp} up",
        )
        _ip(
            self.host_ns,
            "link set lo up",
            f"address add {self.HOST_UPLINK_ADDR}/24 dev {up}",
            f"address add {self.HOST_UPLINK_ADDR6}/64 dev {up} nodad",
            f"link set {up} up",
            f"route add default via {self.UPLINK_ADDR}",
            f"route add default via {self.UPLINK_ADDR6}",
        )

    def _stop_processes(self) -> None:
        stop(*self._procs)
        self._procs.clear()
        self._wg_client = self._ovpn_server = None

    def _remove_wg_sockets(self) -> None:
        for ifname in (self.wg_server_ifname, self.wg_ifname):
            wireguard.remove_stale_socket(ifname)

    # --- running things in the namespaces -------------------------------------

    def run_in(self, ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(argv) inside network namespace `ns` (setns only, mounts unchanged)."""
        popen_kwargs["env"] = child_env(popen_kwargs.get("env"))
        return subprocess.run(netns_exec_argv(ns, argv), **popen_kwargs)

    def popen_in(self, ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(argv) inside network namespace `ns`; close() stops it if still running."""
        popen_kwargs["env"] = child_env(popen_kwargs.get("env"))
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(netns_exec_argv(ns, argv), **popen_kwargs)
        self._procs.append(proc)
        return proc

    # --- servers --------------------------------------------------------------

    def _dns_args(self, addresses: Sequence[str], port: int, answer: str = SERVER_ADDR) -> list[str]:
        binds = [arg for address in addresses for arg in ("--bind", address)]
        return [*binds, "--port", str(port), "--zone", self.ZONE, "--answer", answer]

    def _spawn_server(self, ns: str, kind: str, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start a servers.py server logging to WORKDIR/NAME.jsonl, its stderr going to WORKDIR/NAME.err."""
        argv = [sys.executable, "-m", "appjail.lab.servers", kind, *args, "--log", str(self.workdir / f"{name}.jsonl")]
        with (self.workdir / f"{name}.err").open("wb") as err:
            return self.popen_in(ns, argv, stdout=subprocess.PIPE, stderr=err)

    def _await_server(self, proc: subprocess.Popen[bytes], name: str) -> None:
        assert proc.stdout is not None
        wait_for_output(proc, proc.stdout, READY.encode(), f"server {name}", self.workdir / f"{name}.err")

    def http_log(self) -> list[dict[str, Any]]:
        """Requests the HTTP server got: {"client": ip, "path": path} each."""
        return read_log(self.workdir / "http.jsonl")

    def dns_log(self) -> list[dict[str, Any]]:
        """Queries the DNS server got: {"client": ip, "name": "foo.lab.test.", "type": "A"} each."""
        return read_log(self.workdir / "dns.jsonl")

    def start_dns_trap(self, addresses: Sequence[str], port: int = DNS_PORT) -> DnsTrap:
        """Start a DNS server in HOST on `addresses` (e.g. ["127.0.0.53", "0.0.0.0"]), with its own log."""
        name = f"dns-trap-{next(self._serial)}"
        proc = self._spawn_server(self.host_ns, "dns", name, self._dns_args(addresses, port))
        self._await_server(proc, name)
        return DnsTrap(proc, self.workdir / f"{name}.jsonl")

    def start_host_resolver(self, answer: str, delay: float) -> DnsTrap:
        """The resolver a process in HOST asks (the machine's resolv.conf names it: its IPv4 servers get
        HOST's lo), answering names of ZONE with `answer`, each answer `delay` seconds late."""
        servers = [s for s in resolv.parse_nameservers(Path("/etc/resolv.conf").read_text())
                   if ipaddress.ip_address(s).version == 4]
        if not servers:
            raise LabError("the machine's /etc/resolv.conf names no IPv4 nameserver")
        added = [s for s in servers if not ipaddress.ip_address(s).is_loopback]
        _ip(self.host_ns, *(f"address add {s}/32 dev lo" for s in added))

        def undo() -> None:
            _ip(self.host_ns, *(f"address del {s}/32 dev lo" for s in added))

        name = f"host-resolver-{next(self._serial)}"
        try:
            args = [*self._dns_args(servers, self.DNS_PORT, answer), "--delay", str(delay)]
            proc = self._spawn_server(self.host_ns, "dns", name, args)
            self._await_server(proc, name)
        except BaseException:
            undo()
            raise
        return DnsTrap(proc, self.workdir / f"{name}.jsonl", undo)

    def capture(self, ifname: str, ns: str, bpf_filter: str = "") -> Capture:
        """Start tcpdump on an interface of a namespace; returns once it is capturing."""
        pcap = self.workdir / f"capture-{next(self._serial)}-{ifname}.pcap"
        # --immediate-mode: otherwise packets wait in a ring-buffer block that stop() may not let tcpdump flush.
        # -Z root: as root, tcpdump would otherwise drop to user tcpdump and fail to write the workdir.
        argv = ["tcpdump", "-i", ifname, "-nn", "-U", "--immediate-mode", "-Z", "root", "-w", str(pcap)]
        if bpf_filter:
            argv.append(bpf_filter)
        proc = self.popen_in(ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        wait_for_output(proc, proc.stderr, b"listening on", f"tcpdump on {ifname} in {ns}")
        return Capture(proc, pcap)

    # --- WireGuard ------------------------------------------------------------

    def _setup_wireguard(self) -> None:
        server_key, self._server_pub = wireguard.keypair()
        client_key, self._client_pub = wireguard.keypair()
        wireguard.write_private_key(self._key_file("server"), server_key)
        wireguard.write_private_key(self._key_file("client"), client_key)
        self._spawn_wireguard(self.uplink_ns, self.wg_server_ifname)
        self._configure_wireguard(
            self.uplink_ns,
            self.wg_server_ifname,
            self._key_file("server"),
            self.WG_SERVER_TUNNEL_ADDR,
            [
                "listen-port",
                str(self.WG_PORT),
                "peer",
                self._client_pub,
                "allowed-ips",
                f"{self.WG_CLIENT_TUNNEL_ADDR}/32",
            ],
        )
        self.wg_create()

    def _key_file(self, side: str) -> Path:
        return self.workdir / f"wg-{side}.key"

    def _spawn_wireguard(self, ns: str, ifname: str) -> subprocess.Popen[bytes]:
        """Start wireguard-go for `ifname` in `ns` and wait for its control socket."""
        if wireguard.socket_in_use(ifname):
            raise LabError(
                f"a wireguard-go for {ifname!r} already runs ({wireguard.socket_path(ifname)}); pick another name"
            )
        wireguard.remove_stale_socket(ifname)
        output = self.workdir / f"{ifname}.log"
        with output.open("ab") as out:
            env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}
            proc = self.popen_in(ns, [wireguard.DAEMON, ifname], env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_path(proc, wireguard.socket_path(ifname), f"wireguard-go {ifname}", output)
        return proc

    def _configure_wireguard(self, ns: str, ifname: str, key_file: Path, address: str, peer_args: list[str]) -> None:
        run_checked(netns_exec_argv(ns, ["wg", "set", ifname, "private-key", str(key_file), *peer_args]))
        _ip(ns, f"address add {address}/24 dev {ifname}", f"link set {ifname} up")

    def wg_create(self) -> None:
        """Bring up the client interface wg_ifname in HOST, peered with the server (again after wg_delete())."""
        if self._wg_client is not None:
            if self._wg_link_exists():
                raise LabError(f"{self.wg_ifname} exists already: wg_delete() it first")
            self.wg_delete()  # the interface was deleted behind the lab's back: retire its daemon too
        self._wg_client = self._spawn_wireguard(self.host_ns, self.wg_ifname)
        self._configure_wireguard(
            self.host_ns,
            self.wg_ifname,
            self._key_file("client"),
            self.WG_CLIENT_TUNNEL_ADDR,
            [
                "peer",
                self._server_pub,
                "endpoint",
                f"{self.UPLINK_ADDR}:{self.WG_PORT}",
                "allowed-ips",
                "0.0.0.0/0",
                "persistent-keepalive",
                str(self.WG_KEEPALIVE),
            ],
        )

    def wg_delete(self) -> None:
        """Delete the client interface, as when a VPN goes away, and make sure its daemon is gone."""
        subprocess.run(["ip", "-n", self.host_ns, "link", "delete", self.wg_ifname], capture_output=True)  # may be gone
        if self._wg_client is not None:
            stop(self._wg_client)
            self._procs.remove(self._wg_client)
            self._wg_client = None
        wireguard.remove_stale_socket(self.wg_ifname)

    def _wg_link_exists(self) -> bool:
        show = ["ip", "-n", self.host_ns, "link", "show", self.wg_ifname]
        return subprocess.run(show, capture_output=True).returncode == 0

    def wg_peer(self, address: str, keepalive: int = 0) -> str:
        """A new peer of the lab's WireGuard server with its own key and tunnel ADDRESS (a /32 in
        203.0.113.0/24, or with an IPv6 address too: "203.0.113.10,2001:db8:3::10"): its
        wg-quick file, as a user would get it from a provider (DNS: the lab's server)."""
        v4, _, v6 = address.partition(",")
        private, public = wireguard.keypair()
        allowed = f"{v4}/32" + (f",{v6}/128" if v6 else "")
        run_checked(netns_exec_argv(self.uplink_ns, ["wg", "set", self.wg_server_ifname, "peer", public,
                                                     "allowed-ips", allowed]))
        self._peers.append(public)
        if v6:
            _ip(self.uplink_ns, f"route replace {v6}/128 dev {self.wg_server_ifname}")
        lines = ["[Interface]", f"PrivateKey = {private}", f"Address = {v4}/32" + (f", {v6}/128" if v6 else ""),
                 f"DNS = {self.DNS_ADDR}", "", "[Peer]", f"PublicKey = {self._server_pub}",
                 f"Endpoint = {self.UPLINK_ADDR}:{self.WG_PORT}", "AllowedIPs = 0.0.0.0/0" + (", ::/0" if v6 else "")]
        if keepalive:
            lines.append(f"PersistentKeepalive = {keepalive}")
        return "\n".join(lines) + "\n"

    def wg_peers_forget(self) -> None:
        """The server forgets the peers wg_peer() gave it: it would otherwise keep sending handshakes
        to jails that are gone (for data they left unanswered), on the uplink that later tests capture."""
        while self._peers:
            run_checked(netns_exec_argv(self.uplink_ns, ["wg", "set", self.wg_server_ifname, "peer",
                                                         self._peers.pop(), "remove"]))

    def wg_server_down(self) -> None:
        """The lab's WireGuard server goes away: its UDP port closes (peers and keys stay)."""
        _ip(self.uplink_ns, f"link set {self.wg_server_ifname} down")

    def wg_server_up(self) -> None:
        _ip(self.uplink_ns, f"link set {self.wg_server_ifname} up")

    @contextmanager
    def natpmp_server(self) -> Iterator[str]:
        """miniupnpd in the VPN endpoint: NAT-PMP for the WireGuard server's peers, their ports
        forwarded from NATPMP_PUBLIC_ADDR to whoever comes from the far internet behind it: the
        namespace given (natpmpserver.outside)."""
        conf = natpmpserver.config(natpmpserver.EXT_IF, self.NATPMP_PUBLIC_ADDR, self.wg_server_ifname,
                                   f"{self.WG_SERVER_TUNNEL_ADDR}/24")
        with natpmpserver.outside(self.uplink_ns, f"{self.prefix}-far") as far, \
                natpmpserver.running(self.uplink_ns, self.workdir, conf):
            yield far

    # --- OpenVPN ----------------------------------------------------------------

    @property
    def ovpn_dir(self) -> Path:
        return self.workdir / "openvpn"

    def ovpn_start(self) -> None:
        """The uplink's OpenVPN server (UDP 1194 at UPLINK_ADDR), its keys made now; again after
        ovpn_server_down(). Its log: WORKDIR/openvpn/server.log."""
        if self._ovpn_server is not None:
            return
        if not (self.ovpn_dir / "ta.key").exists():
            openvpn.make_keys(self.ovpn_dir, self.uplink_ns)
            openvpn.server_config(self.ovpn_dir, f"{self.prefix}-ovs", self.UPLINK_ADDR, self.DNS_ADDR)
        log = self.ovpn_dir / "server.log"
        since = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self._ovpn_server = self.popen_in(self.uplink_ns, ["openvpn", "--config", str(self.ovpn_dir / "server.conf")],
                                              stdout=out, stderr=subprocess.STDOUT)
        openvpn.wait_ready(self._ovpn_server, log, since)

    def ovpn_server_down(self) -> None:
        """The OpenVPN server goes away (its process ends; its clients are not told)."""
        if self._ovpn_server is not None:
            stop(self._ovpn_server)
            self._procs.remove(self._ovpn_server)
            self._ovpn_server = None

    def ovpn_client(self, auth_file: str | None = None) -> str:
        """A client .ovpn for the lab's server, keys inline; the user name and password inline, or in
        AUTH_FILE (named by an `auth-user-pass` line, as providers do)."""
        self.ovpn_start()
        auth = (f"auth-user-pass {auth_file}" if auth_file else
                f"<auth-user-pass>\n{openvpn.USER}\n{openvpn.PASSWORD}\n</auth-user-pass>")
        return openvpn.client_text(self.ovpn_dir, self.UPLINK_ADDR, auth)

    def ovpn_client_key(self) -> str:
        """A line of the client's private key (PEM), to look for where it must not be."""
        return (self.ovpn_dir / "client.key").read_text().splitlines()[1]

    def wg_down(self) -> None:
        _ip(self.host_ns, f"link set {self.wg_ifname} down")

    def wg_up(self) -> None:
        _ip(self.host_ns, f"link set {self.wg_ifname} up")
