"""`appjail doctor`: can appjail work here, and what to do where it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

OK, WARN, FAIL = "ok", "warning", "problem"


def _say(level: str, message: str, fix: str = "") -> None:
    print(f"[{level:>7}] {message}")
    if fix:
        print(f"          -> {fix}")


def check_helper() -> bool:
    from .client import Client, HelperError

    try:
        me = Client().whoami()
    except HelperError as exc:
        _say(FAIL, f"appjail-helper: {exc.message}",
             "install appjail (sudo scripts/install), or start it: sudo /opt/appjail/venv/bin/appjail-helper")
        return False
    _say(OK, f"appjail-helper answers on the system bus (you are uid {me['uid']})")
    if me.get("may_run"):
        _say(OK, "you may run programs in jails")
    else:
        _say(FAIL, "polkit does not let you run programs in jails",
             "sudo usermod -aG appjail $USER, then log out and in again")
    return bool(me.get("may_run"))


def check_vpn(ifname: str) -> bool:
    path = Path("/sys/class/net") / ifname
    if not path.exists():
        _say(WARN, f"interface {ifname} does not exist now",
             "a --vpn jail stays closed (kill switch) until it appears; start your VPN")
        return False
    state = (path / "operstate").read_text().strip()
    _say(OK if state in ("up", "unknown") else WARN, f"interface {ifname} exists ({state})")
    return True


def check_firewall() -> bool:
    iptables = shutil.which("iptables") or "/usr/sbin/iptables"
    backend = "nft" if "nft" in os.path.realpath(iptables) else "legacy"
    _say(OK, f"the host's iptables command uses the {backend} backend; appjail writes legacy "
         "(x_tables) rules, which the kernel evaluates alongside nftables")
    if os.geteuid() != 0:
        _say(WARN, "not root: cannot read the host's FORWARD policy", "run `sudo appjail doctor` to check it")
        return True
    # appjail's x_tables rules accept jail traffic before a legacy DROP
    # policy applies; an nftables forward hook with policy drop is a separate
    # gate that drops it all the same (iptables-nft's FORWARD is one of those)
    drops = []
    if shutil.which("nft"):
        ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
        drops = forward_drop_chains(ruleset)
    if drops:
        _say(WARN, "nftables drops forwarded traffic by default (chain " + ", ".join(drops) + ")",
             "appjail's rules sit at the top of FORWARD in x_tables; with nftables add "
             "`iifname \"aj-*\" accept` and `oifname \"aj-*\" ct state established,related accept` to your forward chain")
        return False
    _say(OK, "the host's FORWARD policy lets jail traffic through appjail's own rules")
    return True


def forward_drop_chains(ruleset: str) -> list[str]:
    """`table NAME/chain NAME` of every nftables forward-hook chain whose policy is drop."""
    found, table, chain = [], "", ""
    for line in ruleset.splitlines():
        words = line.split()
        if words[:1] == ["table"] and len(words) >= 3:
            table = f"{words[1]} {words[2]}"
        elif words[:1] == ["chain"] and len(words) >= 2:
            chain = words[1]
        elif "hook forward" in line and "policy drop" in line:
            found.append(f"{table}/{chain}")
    return found


def run_checks(vpn: str | None = None) -> int:
    healthy = check_helper()
    if vpn:
        healthy &= check_vpn(vpn)
    healthy &= check_firewall()
    return 0 if healthy else 1
