"""The jail's netfilter rules: built as plain data, applied with python-iptables.

Rules are dicts in python-iptables' `iptc.easy` form, so the building half is
pure and unit-tested, and the applying half is a thin loop. Every rule that
appjail puts into a built-in chain carries the comment `aj-NAME`; that is how
teardown and reconcile find them without guessing.

Each change is one batch per table (libiptc swaps the whole table in one
commit) made while holding /run/xtables.lock, as the iptables tools do, so
that a concurrent `iptables` never overwrites our commit or we theirs.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

PREFIX = "aj-"
GUARD_CHAIN = "aj-GUARD"  # upper case: never the chain of a jail
XTABLES_LOCK = "/run/xtables.lock"
ESTABLISHED = {"conntrack": {"ctstate": "RELATED,ESTABLISHED"}}
# libiptc keeps one process-wide handle per table; python-iptables is not
# thread-safe, so every use of it goes through this lock.
_iptc_lock = threading.Lock()


class FirewallError(RuntimeError):
    """A netfilter change could not be made."""


def jail_chain(name: str) -> str:
    return PREFIX + name


def tag(rule: dict, owner: str) -> dict:
    return {**rule, "comment": {"comment": owner}}


@dataclass(frozen=True)
class Hook:
    """A rule in a built-in chain, inserted at its top."""

    table: str
    chain: str
    rule: dict


@dataclass(frozen=True)
class JailRules:
    name: str
    chain_rules: tuple[dict, ...]
    hooks: tuple[Hook, ...]

    @property
    def chain(self) -> str:
        return jail_chain(self.name)


def build_jail_rules(name: str, host_ifname: str, network: str, jail_address: str,
                     vpn: str | None) -> JailRules:
    """The jail's own chain and its hooks into FORWARD, INPUT and POSTROUTING.

    Chain order matters for `inspect`: rule 0 counts what came in, rule 1 what
    went out, the final DROP what was refused.
    """
    chain = jail_chain(name)
    owner = chain
    egress = {"out-interface": vpn} if vpn else {"out-interface": "!" + PREFIX + "+"}
    inbound = {"out-interface": host_ifname, **ESTABLISHED, "target": "ACCEPT"}
    if vpn:
        inbound = {"in-interface": vpn, **inbound}
    chain_rules = (
        inbound,
        {"in-interface": host_ifname, "src": jail_address, **egress, "target": "ACCEPT"},
        {"target": "DROP"},
    )
    hooks = (
        Hook("filter", "FORWARD", tag({"in-interface": host_ifname, "target": chain}, owner)),
        Hook("filter", "FORWARD", tag({"out-interface": host_ifname, "target": chain}, owner)),
        # the jail may answer the host, never open anything on it
        Hook("filter", "INPUT", tag({"in-interface": host_ifname, **ESTABLISHED, "target": "ACCEPT"}, owner)),
        Hook("filter", "INPUT", tag({"in-interface": host_ifname, "target": "DROP"}, owner)),
        Hook("nat", "POSTROUTING", tag({"src": network, **egress, "target": "MASQUERADE"}, owner)),
    )
    return JailRules(name, chain_rules, hooks)


def build_guard_rules(forwarding_ifnames: Iterable[str]) -> tuple[dict, ...]:
    """Undo, in FORWARD, the forwarding that appjail had to switch on.

    Replies to a jail enter through the uplink or VPN interface, so those need
    per-interface forwarding. A host that did not forward before must not
    start routing for others: only jail traffic and interfaces on which the
    host itself had forwarding on get past this chain.
    """
    passes = [{"in-interface": PREFIX + "+", "target": "RETURN"},
              {"out-interface": PREFIX + "+", "target": "RETURN"}]
    passes += [{"in-interface": ifname, "target": "RETURN"} for ifname in sorted(forwarding_ifnames)]
    return (*passes, {"target": "DROP"})


@contextmanager
def xtables_lock() -> Iterator[None]:
    fd = os.open(XTABLES_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def batch(*table_names: str, commit: bool = True) -> Iterator[dict]:
    """Tables with autocommit off; committed together on success, dropped on error."""
    import iptc  # loaded on first use: libxtables is slow to load and root-only

    with _iptc_lock, xtables_lock():
        tables = {}
        for table_name in table_names:
            table = iptc.Table(table_name)
            table.autocommit = False
            table.refresh()
            tables[table_name] = table
        try:
            yield tables
            for table in tables.values() if commit else ():
                table.commit()
        except iptc.IPTCError as exc:
            raise FirewallError(f"netfilter refused a change: {exc}") from exc
        finally:
            for table in tables.values():
                table.refresh()
                table.autocommit = True


def _encode(rule: dict):
    from iptc import easy

    return easy.encode_iptc_rule(rule)


def _chain(table, name: str):
    import iptc

    return iptc.Chain(table, name)


def install(rules: JailRules) -> None:
    with batch("filter", "nat") as tables:
        filter_table = tables["filter"]
        if filter_table.is_chain(rules.chain):
            raise FirewallError(f"chain {rules.chain} already exists")
        chain = filter_table.create_chain(rules.chain)
        for rule in rules.chain_rules:
            chain.append_rule(_encode(rule))
        _insert_hooks(tables, rules.hooks)


def _insert_hooks(tables: dict, hooks: Sequence[Hook]) -> None:
    # inserting at the top in reverse keeps the hooks in their given order
    for hook in reversed(hooks):
        _chain(tables[hook.table], hook.chain).insert_rule(_encode(hook.rule))


def remove(name: str) -> None:
    """Remove a jail's chain and every hook tagged with its name."""
    with batch("filter", "nat") as tables:
        _remove_owned(tables, lambda owner: owner == jail_chain(name))
        _delete_chains(tables["filter"], [jail_chain(name)])


def owner_of(rule) -> str | None:
    for match in rule.matches:
        if match.name == "comment":
            return match.parameters.get("comment")
    return None


def _remove_owned(tables: dict, is_target) -> set[str]:
    removed = set()
    for table in tables.values():
        for chain in table.chains:
            if not table.builtin_chain(chain.name):
                continue
            for rule in chain.rules:
                owner = owner_of(rule)
                if owner and owner.startswith(PREFIX) and is_target(owner):
                    chain.delete_rule(rule)
                    removed.add(owner)
    return removed


def _delete_chains(filter_table, names: Iterable[str]) -> None:
    for name in names:
        if filter_table.is_chain(name):
            chain = _chain(filter_table, name)
            chain.flush()
            filter_table.delete_chain(name)


def set_guard(forwarding_ifnames: Iterable[str] | None) -> None:
    """Install (or with None remove) the forwarding guard, replacing any old one."""
    with batch("filter") as tables:
        filter_table = tables["filter"]
        _remove_owned(tables, lambda owner: owner == GUARD_CHAIN)
        _delete_chains(filter_table, [GUARD_CHAIN])
        if forwarding_ifnames is None:
            return
        chain = filter_table.create_chain(GUARD_CHAIN)
        for rule in build_guard_rules(forwarding_ifnames):
            chain.append_rule(_encode(rule))
        _insert_hooks(tables, [Hook("filter", "FORWARD", tag({"target": GUARD_CHAIN}, GUARD_CHAIN))])


@dataclass
class Residue:
    owners: set[str] = field(default_factory=set)
    chains: set[str] = field(default_factory=set)


def sweep(live_owners: set[str]) -> Residue:
    """Remove every aj-* rule and chain whose owner is not in live_owners."""
    residue = Residue()
    with batch("filter", "nat") as tables:
        residue.owners = _remove_owned(tables, lambda owner: owner not in live_owners)
        filter_table = tables["filter"]
        residue.chains = {c.name for c in filter_table.chains
                          if c.name.startswith(PREFIX) and c.name not in live_owners}
        _delete_chains(filter_table, sorted(residue.chains))
    return residue


def list_owned() -> tuple[set[str], set[str]]:
    """(owners of tagged rules, aj-* chains): what a leak check looks at."""
    with batch("filter", "nat", commit=False) as tables:
        owners = set()
        for table in tables.values():
            for chain in table.chains:
                owners.update(o for rule in chain.rules
                              if (o := owner_of(rule)) and o.startswith(PREFIX))
        chains = {c.name for c in tables["filter"].chains if c.name.startswith(PREFIX)}
    return owners, chains
