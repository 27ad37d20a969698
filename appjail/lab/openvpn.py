"""An OpenVPN server for the lab's uplink: keys made with openssl at start, a client file per jail.

The server (Debian's openvpn, UDP 1194 on the uplink's address) gives its
clients addresses in 203.0.113.128/26, pushes the lab's DNS server and
checks a user name and password (a script of the lab's: this is the
server, not a file a user brings). Everything lives in the lab's workdir.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

from appjail.lab.errors import LabError
from appjail.lab.netns import netns_exec_argv
from appjail.lab.process import run_checked

PORT = 1194
NETWORK, NETMASK = "203.0.113.128", "255.255.255.192"  # 203.0.113.128/26; the lab's WireGuard has the rest
# a password of this run's own: a leak check finds it only where it leaked to
USER, PASSWORD = "lab-user", secrets.token_hex(12)
READY = "Initialization Sequence Completed"
READY_TIMEOUT = 15.0
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_keys(directory: Path, uplink_ns: str) -> None:
    """A CA, the server's and a client's certificate and key, and a tls-crypt key, in DIRECTORY (root's)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    run_checked(["openssl", "req", "-x509", *_EC, "-keyout", str(directory / "ca.key"),
                 "-out", str(directory / "ca.crt"), "-subj", "/CN=appjail-lab-ca", "-days", "2"])
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        extensions = directory / f"{name}.ext"
        extensions.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                              f"extendedKeyUsage={usage}\n")
        run_checked(["openssl", "req", "-new", *_EC, "-keyout", str(directory / f"{name}.key"),
                     "-out", str(directory / f"{name}.csr"), "-subj", f"/CN=lab-{name}"])
        run_checked(["openssl", "x509", "-req", "-in", str(directory / f"{name}.csr"), "-CA",
                     str(directory / "ca.crt"), "-CAkey", str(directory / "ca.key"), "-CAcreateserial",
                     "-out", str(directory / f"{name}.crt"), "-days", "2", "-extfile", str(extensions)])
    # --genkey opens no socket; it still runs in the lab's uplink, never in the machine's namespace
    run_checked(netns_exec_argv(uplink_ns, ["openvpn", "--genkey", "secret", str(directory / "ta.key")]))


def server_config(directory: Path, ifname: str, address: str, dns: str) -> Path:
    """The server's configuration file in DIRECTORY."""
    verify = directory / "verify-user"
    verify.write_text(f'#!/bin/sh\n[ "$(cat "$1")" = "$(printf "%s\\n%s" {USER} {PASSWORD})" ]\n')
    verify.chmod(0o700)
    lines = [f"dev {ifname}", "dev-type tun", "proto udp", f"local {address}", f"port {PORT}",
             "topology subnet", f"server {NETWORK} {NETMASK}", f'push "dhcp-option DNS {dns}"',
             "keepalive 1 4", f"ca {directory / 'ca.crt'}", f"cert {directory / 'server.crt'}",
             f"key {directory / 'server.key'}", f"tls-crypt {directory / 'ta.key'}", "dh none",
             "duplicate-cn", "disable-dco", "verb 3", "script-security 2",
             f"auth-user-pass-verify {verify} via-file", f"tmp-dir {directory}"]
    path = directory / "server.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def client_text(directory: Path, remote: str, auth: str) -> str:
    """A client .ovpn as a provider hands it out, keys inline; AUTH: its auth-user-pass lines."""
    def block(name: str, file: str) -> list[str]:
        return [f"<{name}>", (directory / file).read_text().strip(), f"</{name}>"]

    lines = ["client", "dev tun", "proto udp", f"remote {remote} {PORT}", "nobind", "persist-key",
             "remote-cert-tls server", "verb 3", auth, *block("ca", "ca.crt"), *block("cert", "client.crt"),
             *block("key", "client.key"), *block("tls-crypt", "ta.key")]
    return "\n".join(lines) + "\n"


def wait_ready(proc: subprocess.Popen[bytes], log: Path, since: int) -> None:
    """Wait until the server's log (from offset SINCE) says it serves."""
    deadline = time.monotonic() + READY_TIMEOUT
    while READY not in (log.read_bytes()[since:].decode(errors="replace") if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise LabError(f"the lab's OpenVPN server did not start: {tail}")
        time.sleep(0.05)
