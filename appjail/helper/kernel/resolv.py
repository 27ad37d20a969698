"""Per-jail resolver files in /etc/netns/aj-NAME/ (the ip-netns(8) convention).

A jail must ask its own DNS servers and nothing on the host: no loopback stub
(systemd-resolved's 127.0.0.53 is the host's loopback, not the jail's), and no
NSS module that talks to a host socket (`resolve`, `mdns*`, `myhostname`
would answer from outside the jail), hence `hosts: files dns`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ...linkdns import parse_nameservers

ETC_NETNS = Path("/etc/netns")
# Where the host's real upstream servers are written down, best first:
# systemd-resolved's and NetworkManager's lists of upstreams, then the
# classic file (which, on such hosts, only names the loopback stub).
UPSTREAM_SOURCES = (
    Path("/run/systemd/resolve/resolv.conf"),
    Path("/run/NetworkManager/no-stub-resolv.conf"),
    Path("/etc/resolv.conf"),
)
NSSWITCH_HOSTS = "hosts:          files dns"
GENERATED = "# written by appjail for this jail; removed with it"


class NoUpstreamDNS(RuntimeError):
    """The host names no DNS server a jail could reach."""


def host_upstream_servers(sources: Sequence[Path] = UPSTREAM_SOURCES) -> list[str]:
    """The first source that names a usable server wins."""
    for source in sources:
        try:
            servers = parse_nameservers(source.read_text())
        except OSError:
            continue
        if servers:
            return servers[:3]
    raise NoUpstreamDNS(
        "the host names no DNS server reachable from a jail (only loopback stubs in "
        + ", ".join(str(s) for s in sources) + "); give one with --dns ADDR"
    )


def render_resolv_conf(servers: Sequence[str]) -> str:
    lines = [GENERATED, *(f"nameserver {s}" for s in servers)]
    return "\n".join(lines) + "\n"


def render_nsswitch_conf(host_nsswitch: str) -> str:
    """The host's nsswitch.conf with the hosts line replaced."""
    lines = [GENERATED]
    replaced = False
    for line in host_nsswitch.splitlines():
        if line.split(":", 1)[0].strip() == "hosts":
            if not replaced:
                lines.append(NSSWITCH_HOSTS)
                replaced = True
            continue
        lines.append(line)
    if not replaced:
        lines.append(NSSWITCH_HOSTS)
    return "\n".join(lines) + "\n"


def jail_etc_dir(netns_name: str, root: Path = ETC_NETNS) -> Path:
    return root / netns_name


def write_resolver_files(netns_name: str, servers: Sequence[str], root: Path = ETC_NETNS,
                         host_nsswitch: Path = Path("/etc/nsswitch.conf")) -> Path:
    """Create /etc/netns/NETNS/{resolv.conf,nsswitch.conf}; return the directory."""
    try:
        nsswitch = host_nsswitch.read_text()
    except FileNotFoundError:
        nsswitch = ""
    directory = jail_etc_dir(netns_name, root)
    root.mkdir(mode=0o755, exist_ok=True)
    directory.mkdir(mode=0o755)
    try:
        _write_readable(directory / "resolv.conf", render_resolv_conf(servers))
        _write_readable(directory / "nsswitch.conf", render_nsswitch_conf(nsswitch))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory


def replace_resolv_conf(netns_name: str, servers: Sequence[str], root: Path = ETC_NETNS) -> None:
    """Point an existing jail's resolv.conf at other servers (a tunnel's pushed ones), atomically:
    a program starting meanwhile binds the old file or the new one."""
    directory = jail_etc_dir(netns_name, root)
    staged = directory / ".resolv.conf.new"
    staged.unlink(missing_ok=True)
    _write_readable(staged, render_resolv_conf(servers))
    os.replace(staged, directory / "resolv.conf")


def remove_resolver_files(netns_name: str, root: Path = ETC_NETNS) -> None:
    shutil.rmtree(jail_etc_dir(netns_name, root), ignore_errors=True)


def _write_readable(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
