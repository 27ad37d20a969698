"""`appjail doctor`: can appjail work here, and what to do where it cannot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .hostfirewall import FAIL, OK, WARN, analyse
from .linkdns import LinkDNS, NoLinkDNS, link_dns

LEGACY_TABLES = Path("/proc/net/ip_tables_names")
SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists when systemd is the init system (sd_booted)


def _say(level: str, message: str, fix: str = "") -> None:
    print(f"[{level:>7}] {message}")
    if fix:
        print(f"          -> {fix}")


def check_helper() -> dict | None:
    """What the helper says of the caller and of itself; None when it does not answer."""
    from .client import Client, HelperError

    try:
        me = Client().whoami()
    except HelperError as exc:
        _say(FAIL, f"appjail-helper: {exc.message}",
             "install appjail (sudo ./scripts/install), or start it: sudo appjail-helper")
        return None
    _say(OK, f"appjail-helper answers on the system bus (you are uid {me['uid']})")
    if me.get("may_run"):
        _say(OK, "you may run programs in jails")
    else:
        _say(FAIL, "polkit does not let you run programs in jails",
             "sudo usermod -aG appjail $USER, then log out and in again")
    for sentence in me.get("declared_errors", []):
        _say(FAIL, f"declared jail: {sentence}", "fix the file, then `sudo appjail reload`")
    if "firewall" in me:
        _say(OK, f"the helper writes its rules with the {me['firewall']} backend ({me['firewall_reason']})",
             "another backend: appjail-helper --firewall nftables|xtables, or APPJAIL_FIREWALL")
    return me


def check_vpn(ifname: str) -> bool:
    path = Path("/sys/class/net") / ifname
    if not path.exists():
        _say(WARN, f"interface {ifname} does not exist now",
             "a --vpn jail stays closed (kill switch) until it appears; start your VPN")
        return False
    state = (path / "operstate").read_text().strip()
    _say(OK if state in ("up", "unknown") else WARN, f"interface {ifname} exists ({state})")
    check_vpn_dns(ifname)
    return True


def check_vpn_dns(ifname: str, find: Callable[[str], LinkDNS] = link_dns) -> None:
    """Which servers a --vpn jail without --dns gets: the system's for the interface, or none."""
    try:
        found = find(ifname)
    except NoLinkDNS as exc:
        _say(WARN, f"a --vpn {ifname} jail without --dns is refused: {exc}",
             f"appjail run --vpn {ifname} --dns ADDR ... (ADDR: a DNS server your VPN reaches)")
        return
    _say(OK, f"a --vpn {ifname} jail asks {', '.join(found.servers)} for names (from {found.source})")


def check_systemd(runtime: Path = SYSTEMD_RUNTIME) -> None:
    """Whether systemd runs: without it nothing can put a program into the user's own slice."""
    if runtime.is_dir():
        _say(OK, "systemd runs here: each program goes into a scope of your user-UID.slice")
    else:
        _say(WARN, "systemd does not run here: programs stay in the helper's cgroup, "
                   "so neither your logout nor a limit on your own processes (a fork bomb) reaches them")


# tools that rewrite or override the host's firewall, and how each is found: (name, paths any of which
# says it is set up here, what it does to appjail's rules)
FIREWALL_TOOLS = (
    ("the nftables service", ("systemd/system/sysinit.target.wants/nftables.service",
                              "systemd/system/multi-user.target.wants/nftables.service"),
     "its start and restart load /etc/nftables.conf, whose `flush ruleset` removes appjail's table"),
    ("Docker", ("systemd/system/multi-user.target.wants/docker.service", "systemd/system/sockets.target.wants/"
                "docker.socket"), "dockerd sets FORWARD's policy to DROP when it starts"),
    ("ufw", ("ufw/ufw.conf:ENABLED=yes",), "`ufw enable` and `ufw reload` rebuild its chains, FORWARD dropping"),
    ("netfilter-persistent", ("systemd/system/multi-user.target.wants/netfilter-persistent.service",),
     "it restores saved iptables rules, without appjail's"),
    ("firewalld", ("systemd/system/multi-user.target.wants/firewalld.service",),
     "its reload and restart forget appjail's interfaces"),
)


def check_firewall_tools(etc: Path = Path("/etc")) -> None:
    """Name the tools here that may remove appjail's rules at any moment, and what the helper does then."""
    for name, signs, what in FIREWALL_TOOLS:
        if any(_present(etc, sign) for sign in signs):
            _say(OK, f"{name} is set up here: {what}; the helper puts appjail's rules back within a second "
                     "when it does, and what a jail must not reach stays closed meanwhile")


def _present(etc: Path, sign: str) -> bool:
    """PATH exists, or PATH:LINE is a line of it."""
    path, _, line = sign.partition(":")
    try:
        return (etc / path).exists() if not line else line in (etc / path).read_text().splitlines()
    except OSError:
        return False


def check_firewall() -> bool:
    iptables = shutil.which("iptables") or "/usr/sbin/iptables"
    build = "nft" if "nft" in os.path.realpath(iptables) else "legacy"
    _say(OK, f"the host's iptables command is the {build} build")
    if os.geteuid() != 0:
        _say(WARN, "not root: cannot read the host's firewall rules", "run `sudo appjail doctor` to check them")
        return True
    healthy = True
    for finding in analyse(_nft_ruleset(), _legacy_rules()):
        _say(finding.level, finding.message)
        for line in finding.fix:
            print(f"          -> {line}")
        healthy &= finding.level != FAIL
    return healthy


def _command_output(argv: list[str]) -> str:
    """What a read-only command prints; empty when it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return ""
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout


def _legacy_rules() -> str:
    """iptables-legacy-save, only where legacy tables exist: listing them would create them."""
    try:
        in_use = LEGACY_TABLES.read_text().split()
    except FileNotFoundError:  # a kernel without legacy x_tables
        in_use = []
    return _command_output(["iptables-legacy-save"]) if in_use else ""


def _nft_ruleset() -> dict:
    """`nft -j list ruleset`: nftables and iptables-nft alike."""
    output = _command_output(["nft", "-j", "list", "ruleset"])
    return json.loads(output) if output.strip() else {}


def run_checks(vpn: str | None = None) -> int:
    me = check_helper()
    healthy = bool(me and me.get("may_run") and not me.get("declared_errors"))
    if vpn:
        healthy &= check_vpn(vpn)
    check_systemd()
    healthy &= check_firewall()
    check_firewall_tools()
    return 0 if healthy else 1
