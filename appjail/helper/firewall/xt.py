"""The x_tables backend: a jail's rules applied with python-iptables.

Each change is one batch per table (libiptc swaps the whole table in one
commit) made while holding /run/xtables.lock, as the iptables tools do, so
that a concurrent `iptables` never overwrites our commit or we theirs.

Blocked destinations: a record rule is `-j NFLOG` (see nflog), read by a
thread of the helper into a bounded table.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from . import nflog
from .blocked import Blocked
from .backends import Counters, Damage, FirewallError, Residue, legacy_tables
from .rules import (GUARD_CHAIN, PREFIX, RECORD, Hook, JailRules, build_guard_rules, jail_chain, reason_code,
                    sum_by_role, tag)

XTABLES_LOCK = "/run/xtables.lock"
TABLES = ("filter", "nat")
# libiptc keeps one process-wide handle per table; python-iptables is not
# thread-safe, so every use of it goes through this lock.
_iptc_lock = threading.Lock()


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
    """Fresh copies of the tables; committed together on success, dropped on error.

    Autocommit stays off for good: python-iptables' Table objects are shared
    per name, and with autocommit on, the next refresh would commit whatever
    stale copy the handle still holds over changes made since by others. Each
    use starts with refresh(), which then only drops the old copy.
    """
    import iptc  # loaded on first use: libxtables is slow to load and root-only

    with _iptc_lock, xtables_lock():
        tables = {}
        for table_name in table_names:
            tables[table_name] = _fresh_table(iptc, table_name)
        try:
            yield tables
            for table in tables.values() if commit else ():
                table.commit()
        except iptc.IPTCError as exc:
            raise FirewallError(f"netfilter refused a change: {exc}") from exc


def _fresh_table(iptc, name: str):
    table = iptc.Table(name)
    table.autocommit = False
    table.refresh()
    return table


def _encode(rule: dict):
    from iptc import easy

    return easy.encode_iptc_rule(_nflog(rule))


def _nflog(rule: dict) -> dict:
    """A record rule's target: NFLOG to the group of its reason (see nflog).

    No --nflog-size: python-iptables would pass it as the obsolete --nflog-range,
    which makes libxtables exit; the reader's group setting copies 64 bytes.
    """
    target = rule["target"]
    if not (isinstance(target, dict) and RECORD in target):
        return rule
    record = target[RECORD]
    return {**rule, "target": {"NFLOG": {"nflog-group": str(nflog.group(reason_code(record["reason"])))}}}


def _chain(table, name: str):
    import iptc

    return iptc.Chain(table, name)


def _insert_hooks(tables: dict, hooks: Sequence[Hook]) -> None:
    # inserting at the top in reverse keeps the hooks in their given order
    for hook in reversed(hooks):
        _chain(tables[hook.table], hook.chain).insert_rule(_encode(hook.rule))


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


def _jail_chains(filter_table) -> list[str]:
    return [c.name for c in filter_table.chains if c.name.startswith(PREFIX) and c.name != GUARD_CHAIN]


def _raw_entries(table, chain: str) -> list:
    """The chain's ipt_entry structures, as libiptc holds them."""
    entries = []
    entry = table.first_rule(chain)
    while entry:
        entries.append(entry)
        entry = table.next_rule(entry)
    return entries


class XtablesBackend:
    """FirewallBackend on legacy x_tables (see firewall.FirewallBackend)."""

    name = "xtables"

    def __init__(self) -> None:
        self._reader = nflog.READER
        self.blocked = self._reader.table

    def install(self, rules: JailRules) -> None:
        self._reader.start()
        with batch(*TABLES) as tables:
            filter_table = tables["filter"]
            if filter_table.is_chain(rules.chain):
                raise FirewallError(f"chain {rules.chain} already exists")
            chain = filter_table.create_chain(rules.chain)
            for rule in rules.chain_rules:
                chain.append_rule(_encode(rule))
            _insert_hooks(tables, rules.hooks)

    def remove(self, rules: JailRules) -> None:
        """Remove a jail's hooks and its chain.

        Each hook is deleted as the exact rule it was (as `iptables -D` does, no
        rule decoded in Python); if one is not where it should be, every rule
        tagged with the jail's name is found by walking the built-in chains,
        which costs ~1 ms per 50 rules.
        """
        import iptc

        with batch(*TABLES) as tables:
            try:
                for hook in rules.hooks:
                    _chain(tables[hook.table], hook.chain).delete_rule(_encode(hook.rule))
            except (iptc.IPTCError, ValueError):  # ValueError: its chain is gone (a table restored, flushed)
                _remove_owned(tables, lambda owner: owner == rules.chain)
            _delete_chains(tables["filter"], [rules.chain])
            jails_left = _jail_chains(tables["filter"])
        self.blocked.forget(rules.name)
        if not jails_left:
            self._reader.stop()

    def set_guard(self, forwarding_ifnames: Iterable[str] | None) -> None:
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

    def sweep(self, live_owners: set[str]) -> Residue:
        """Remove every aj-* rule and chain whose owner is not in live_owners."""
        residue = Residue()
        if not legacy_tables():  # nothing of ours, and looking would create the tables
            return residue
        with batch(*TABLES) as tables:
            residue.owners = _remove_owned(tables, lambda owner: owner not in live_owners)
            filter_table = tables["filter"]
            residue.chains = {c.name for c in filter_table.chains
                              if c.name.startswith(PREFIX) and c.name not in live_owners}
            _delete_chains(filter_table, sorted(residue.chains))
            jails_left = _jail_chains(filter_table)
        if not jails_left:
            self._reader.stop()
        return residue

    def read_counters(self, layouts: Mapping[str, Sequence[str]]) -> Counters:
        """(packets, bytes) per role for each jail, from its own chain.

        layouts[name] is the role of each rule of the jail's chain, in order
        (JailRules.roles). A chain with exactly that many rules is read by
        position from the raw entries, no rule decoded: decoding costs ~0.1 ms
        a rule, which was most of `ls` with 200 jails. Any other chain (changed
        by hand, made by another version; an empty layout) is decoded rule by
        rule and summed by the role in each comment. One copy of the filter
        table from the kernel; a jail whose chain is missing gets no entry.
        """
        import iptc

        result = {}
        with _iptc_lock:
            table = _fresh_table(iptc, "filter")
            for name, layout in layouts.items():
                chain = jail_chain(name)
                if not table.is_chain(chain):
                    continue
                entries = _raw_entries(table, chain)
                if layout and len(entries) == len(layout):
                    counted = zip(layout, [(e.counters.pcnt, e.counters.bcnt) for e in entries])
                else:
                    counted = ((owner_of(rule), rule.get_counters()) for rule in _chain(table, chain).rules)
                result[name] = sum_by_role(counted)
        return result

    def read_blocked(self, name: str, now: int) -> list[Blocked]:
        """What the reader has added up (started here too, for jails adopted from an earlier helper)."""
        self._reader.start()
        return self.blocked.entries(name, now)

    def damaged(self, expected: Sequence[JailRules], guard: bool) -> Damage:
        """Each jail's chain with at least as many rules as it had, and its hooks above every other
        tool's rule in their chains; the guard's chain and hook.

        A jail's hooks come first (install inserts them at the top) because a rule above them may end
        a jail packet's way through the chain before appjail's sees it: dockerd, on each start, moves
        its jump to DOCKER-USER (where coexist accepts aj-+) to the top of FORWARD, and the jails'
        chains would count nothing more. Only the built-in chains' rules are decoded (for their
        owners); jail chains are counted.
        """
        wanted = {rules.chain for rules in expected} | ({GUARD_CHAIN} if guard else set())
        if not set(TABLES) <= set(legacy_tables() or ()):  # a table is gone (and looking would make it)
            return Damage(wanted)
        with batch(*TABLES, commit=False) as tables:
            hooks: Counter[str | None] = Counter()
            buried = set()  # owners with a hook below another tool's rule
            for table in tables.values():
                for chain in table.chains:
                    if table.builtin_chain(chain.name):
                        foreign = False
                        for rule in chain.rules:
                            owner = owner_of(rule)
                            hooks[owner] += 1
                            foreign = foreign or not (owner and owner.startswith(PREFIX))
                            if foreign and owner:
                                buried.add(owner)
            filter_table = tables["filter"]
            lengths = {chain: len(_raw_entries(filter_table, chain)) for chain in wanted
                       if filter_table.is_chain(chain)}
        damage = Damage({GUARD_CHAIN} if guard and not (lengths.get(GUARD_CHAIN) and hooks[GUARD_CHAIN]) else set())
        # fewer, not different: a rule an admin added to a jail's chain is theirs to keep
        damage.owners |= {rules.chain for rules in expected if lengths.get(rules.chain, 0) < len(rules.chain_rules)
                          or hooks[rules.chain] < len(rules.hooks) or rules.chain in buried}
        return damage

    def list_owned(self) -> tuple[set[str], set[str]]:
        """(owners of tagged rules, aj-* chains): what a leak check looks at."""
        if not legacy_tables():
            return set(), set()
        with batch(*TABLES, commit=False) as tables:
            owners = set()
            for table in tables.values():
                for chain in table.chains:
                    owners.update(o for rule in chain.rules
                                  if (o := owner_of(rule)) and o.startswith(PREFIX))
            chains = {c.name for c in tables["filter"].chains if c.name.startswith(PREFIX)}
        return owners, chains
