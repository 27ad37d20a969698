"""What stands between a jail and the network: the host's other firewalls, read as data.

In netfilter a packet must pass every base chain on a hook: an accept in
appjail's own chain does not cancel a drop in Docker's, ufw's, firewalld's
or an admin's chain on the same hook. This module names each base chain on
the forward and postrouting hooks (nftables, iptables-nft and
iptables-legacy) and says whether appjail lets its interfaces through it
(appjail.helper.firewall.coexist does that while jails exist) or whom to ask.

Pure: it reads `nft -j list ruleset` and `iptables-legacy-save` output that
the caller captured, so `appjail doctor` stays unprivileged code and the
analysis is unit-tested on captured rulesets. No helper module is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# appjail's host-side interfaces, in iptables' and in nft's wildcard syntax
IFACES_XT = "aj-+"
IFACES_NFT = "aj-*"
# the comment on the rules appjail.helper.firewall.coexist puts into other firewalls;
# not "aj-...", which the x_tables backend's sweep reads as a jail's own
TAG = "appjail"
PREFIX_XT = "aj-"  # appjail's own x_tables rules carry the comment aj-NAME
DEFAULT_FIREWALLD_ZONE = "trusted"
FIREWALLD_TABLE = ("inet", "firewalld")
APPJAIL_TABLE = ("inet", "appjail")
XT_FILTER_CHAINS = ("FORWARD", "DOCKER-USER")
OK, WARN, FAIL = "ok", "warning", "problem"


@dataclass(frozen=True)
class Finding:
    level: str
    message: str
    fix: tuple[str, ...] = ()


@dataclass(frozen=True)
class XtPlace:
    """Where coexist's accept rules go in one x_tables backend: CHAIN at POSITION (1-based)."""

    chain: str
    position: int
    framework: str


def xt_place(listing: str) -> XtPlace | None:
    """Where appjail's accept rules belong in a filter table listed with `iptables -S`.

    DOCKER-USER when it exists (the place Docker documents for other
    software); else the top of FORWARD when FORWARD drops (policy DROP or a
    final unconditional DROP/REJECT, as ufw, RHEL-style and hand-made
    setups do), below appjail's own hooks (comments aj-*), which must see a
    jail's packets first. None when nothing there drops forwarded traffic.
    """
    lines = listing.splitlines()
    if "-N DOCKER-USER" in lines:
        return XtPlace("DOCKER-USER", 1, "Docker")
    forward = [line for line in lines if line.startswith("-A FORWARD ")]
    final = forward[-1] if forward else ""
    if "-P FORWARD DROP" not in lines and final not in ("-A FORWARD -j DROP", "-A FORWARD -j REJECT") \
            and not final.startswith("-A FORWARD -j REJECT "):
        return None
    framework = "ufw" if "-N ufw-user-forward" in lines else "FORWARD drops"
    leading = 0
    for line in forward:
        if f"--comment {PREFIX_XT}" not in line:
            break
        leading += 1
    return XtPlace("FORWARD", leading + 1, framework)


def xt_tagged(listing: str) -> list[tuple[str, str]]:
    """(chain, "-i" or "-o") of each of appjail's coexist rules in an `iptables -S` listing."""
    found = []
    for line in listing.splitlines():
        words = line.split()
        if words[:1] == ["-A"] and len(words) > 2 and words[1] in XT_FILTER_CHAINS \
                and f"--comment {TAG} " in line + " ":
            found.append((words[1], "-i" if "-i" in words else "-o"))
    return found


# -- the analysis for doctor ---------------------------------------------------

def analyse(ruleset: dict, legacy_save: str, firewalld_zone: str = DEFAULT_FIREWALLD_ZONE) -> list[Finding]:
    """One finding per base chain on the forward and postrouting hooks, and what appjail does about it."""
    nft = _Nft(ruleset)
    findings = [_nft_finding(nft, chain, firewalld_zone) for chain in nft.base_chains()]
    findings += _legacy_findings(legacy_save)
    if not findings:
        findings.append(Finding(OK, "no firewall filters forwarded traffic on this host"))
    return findings


class _Nft:
    """Tables, chains and rules of `nft -j list ruleset`."""

    def __init__(self, ruleset: dict) -> None:
        items = ruleset.get("nftables", [])
        self.chains = [item["chain"] for item in items if "chain" in item]
        self.rules: dict[tuple[str, str, str], list[list[dict]]] = {}
        for item in items:
            if "rule" in item:
                rule = item["rule"]
                self.rules.setdefault((rule["family"], rule["table"], rule["chain"]), []).append(rule["expr"])

    def base_chains(self) -> Iterator[dict]:
        return (chain for chain in self.chains if chain.get("hook") in ("forward", "postrouting"))

    def has_chain(self, family: str, table: str, name: str) -> bool:
        return any((c["family"], c["table"], c["name"]) == (family, table, name) for c in self.chains)

    def drops(self, chain: dict) -> bool:
        """Policy drop, or a last rule that drops or rejects whatever reaches it."""
        rules = self.rules.get(_key(chain), [])
        return chain.get("policy") == "drop" or bool(rules) and _unconditional_drop(rules[-1])

    def accepts_jails(self, family: str, table: str, name: str, seen: frozenset = frozenset()) -> set[str]:
        """Which of iifname/oifname "aj-*" this chain (or one it jumps to) accepts."""
        found: set[str] = set()
        for expr in self.rules.get((family, table, name), []):
            verdict = _verdict(expr)
            if verdict == "accept":
                found |= {key for key in ("iifname", "oifname") if _matches_jails(expr, key)}
            elif verdict in ("jump", "goto"):
                target = next(e[verdict]["target"] for e in expr if verdict in e)
                if target not in seen:
                    found |= self.accepts_jails(family, table, target, seen | {name})
        return found


def _key(chain: dict) -> tuple[str, str, str]:
    return chain["family"], chain["table"], chain["name"]


def _verdict(expr: list[dict]) -> str | None:
    for statement in expr:
        for verdict in ("accept", "drop", "reject", "jump", "goto", "return"):
            if verdict in statement:
                return verdict
    return None


def _unconditional_drop(expr: list[dict]) -> bool:
    return _verdict(expr) in ("drop", "reject") and not any("match" in statement for statement in expr)


def _matches_jails(expr: list[dict], key: str) -> bool:
    return any(statement.get("match", {}).get("left") == {"meta": {"key": key}}
               and statement["match"].get("right") == IFACES_NFT and statement["match"].get("op") in ("==", "in")
               for statement in expr)


def nft_fix(family: str, table: str, chain: str) -> tuple[str, ...]:
    """The lines that let jail traffic through an admin's chain (replies and published ports included)."""
    where = f"nft insert rule {family} {table} {chain}"
    return (f'{where} iifname "{IFACES_NFT}" accept',
            f'{where} oifname "{IFACES_NFT}" ct state established,related accept',
            f'{where} oifname "{IFACES_NFT}" ct status dnat accept')


def _nft_finding(nft: _Nft, chain: dict, firewalld_zone: str) -> Finding:
    family, table, name = _key(chain)
    hook = chain["hook"]
    label = f"nftables {family} {table} chain {name} (hook {hook}, policy {chain.get('policy', 'accept')})"
    if (family, table) == APPJAIL_TABLE:
        return Finding(OK, f"{label}: appjail's own table")
    if family not in ("ip", "inet"):
        return Finding(OK, f"{label}: not IPv4, and jails have no IPv6")
    if chain.get("type") == "nat":
        return Finding(OK, f"{label}: address translation only, it does not filter")
    if (family, table) == FIREWALLD_TABLE:
        zone = _firewalld_zone_of_jails(nft)
        state = f"{IFACES_XT} is in its zone {zone} now" if zone else \
            f"appjail puts {IFACES_XT} into its zone {firewalld_zone} while jails exist"
        return Finding(OK, f"{label}: firewalld; {state} (through firewalld's D-Bus API)")
    accepted = nft.accepts_jails(family, table, name)
    if not nft.drops(chain):
        return Finding(OK, f"{label}: lets forwarded traffic through")
    if family == "ip" and table == "filter" and name == "FORWARD":
        framework = ("Docker" if nft.has_chain(family, table, "DOCKER-USER")
                     else "ufw" if nft.has_chain(family, table, "ufw-user-forward") else "iptables-nft")
        where = "in DOCKER-USER" if framework == "Docker" else "at the top of FORWARD"
        now = "now" if accepted >= {"iifname", "oifname"} else "while jails exist"
        return Finding(OK, f"{label}: {framework} (iptables-nft); appjail accepts {IFACES_XT} {where} {now}")
    if accepted >= {"iifname", "oifname"}:
        return Finding(OK, f"{label}: drops forwarded traffic, but accepts appjail's interfaces ({IFACES_NFT})")
    return Finding(FAIL, f"{label}: drops jail traffic; appjail leaves this chain alone, add to it:",
                   nft_fix(family, table, name))


def _firewalld_zone_of_jails(nft: _Nft) -> str | None:
    """The zone firewalld dispatches appjail's interfaces to, from its forward zone dispatch chain."""
    for expr in nft.rules.get((*FIREWALLD_TABLE, "filter_FORWARD_ZONES"), []):
        if _matches_jails(expr, "iifname") and _verdict(expr) == "goto":
            target = next(e["goto"]["target"] for e in expr if "goto" in e)
            return target.removeprefix("filter_FWD_")
    return None


def _legacy_findings(save: str) -> list[Finding]:
    """iptables-legacy: FORWARD of filter and mangle, POSTROUTING of nat and mangle."""
    tables: dict[str, list[str]] = {}  # table -> its chains and rules as `iptables -S` lists them
    table = ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            tables.setdefault(table, []).append(f"-N {chain}" if policy == "-" else f"-P {chain} {policy}")
        elif line.startswith("-A "):
            tables.setdefault(table, []).append(line)
    findings = []
    for table, chain in (("filter", "FORWARD"), ("mangle", "FORWARD"), ("mangle", "POSTROUTING"),
                         ("nat", "POSTROUTING")):
        listing = tables.get(table, [])
        policy = next((line.split()[2] for line in listing if line.startswith(f"-P {chain} ")), None)
        if policy is None:
            continue
        label = f"iptables-legacy {table} chain {chain} (policy {policy})"
        place = xt_place("\n".join(listing)) if table == "filter" else None
        if table == "nat":
            findings.append(Finding(OK, f"{label}: address translation only, it does not filter"))
        elif place is not None:
            where = "in DOCKER-USER" if place.chain == "DOCKER-USER" else "at the top of FORWARD"
            findings.append(Finding(OK, f"{label}: {place.framework}; appjail accepts {IFACES_XT} {where} "
                                        "while jails exist"))
        elif policy == "DROP":
            fix = tuple(f"iptables-legacy -t {table} -I {chain} {direction} {IFACES_XT} -j ACCEPT"
                        for direction in ("-i", "-o"))
            findings.append(Finding(FAIL, f"{label}: drops jail traffic; appjail leaves this chain alone", fix))
        else:
            findings.append(Finding(OK, f"{label}: lets forwarded traffic through"))
    return findings
