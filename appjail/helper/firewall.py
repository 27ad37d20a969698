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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..model import JailSpec, Publish

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

    @property
    def roles(self) -> tuple[str, ...]:
        """What each rule of the chain counts, in order (see read_counters)."""
        return tuple(rule["comment"]["comment"] for rule in self.chain_rules)


# What each rule of a jail's chain counts, kept in its comment: `inspect`
# adds the counters up by role.
ROLE_IN, ROLE_OUT, ROLE_DROPPED = "in", "out", "dropped"
ROLES = (ROLE_IN, ROLE_OUT, ROLE_DROPPED)


def _role(rule: dict, role: str) -> dict:
    return {**rule, "comment": {"comment": role}}


def build_jail_rules(spec: JailSpec, host_ifname: str, network: str, jail_address: str) -> JailRules:
    """The jail's own chain and its hooks into FORWARD, INPUT, PREROUTING, OUTPUT, POSTROUTING.

    Chain order: replies in; published ports in; replies out (also to denied
    ranges, for connections that came in through a published port); denied
    ranges dropped; the jail's own traffic out; everything else dropped.
    """
    chain = jail_chain(spec.name)
    owner = chain
    vpn = spec.vpn
    egress = {"out-interface": vpn} if vpn else {"out-interface": "!" + PREFIX + "+"}
    from_jail = {"in-interface": host_ifname, "src": jail_address}
    inbound = {"out-interface": host_ifname, **ESTABLISHED, "target": "ACCEPT"}
    if vpn:
        inbound = {"in-interface": vpn, **inbound}
    chain_rules = [_role(inbound, ROLE_IN)]
    chain_rules += [_role({"out-interface": host_ifname, "dst": jail_address, "protocol": p.proto,
                           p.proto: {"dport": str(p.jail_port)}, "conntrack": {"ctstate": "DNAT"},
                           "target": "ACCEPT"}, ROLE_IN) for p in spec.publish]
    if spec.publish:
        chain_rules.append(_role({**from_jail, **egress, **ESTABLISHED, "target": "ACCEPT"}, ROLE_OUT))
    chain_rules += [_role({**from_jail, "dst": cidr, "target": "DROP"}, ROLE_DROPPED)
                    for cidr in spec.deny]
    # the VPN's own ranges are the VPN path: --no-lan keeps them open
    beside_vpn = {"out-interface": "!" + vpn} if vpn else {}
    chain_rules += [_role({**from_jail, "dst": cidr, **beside_vpn, "target": "DROP"}, ROLE_DROPPED)
                    for cidr in spec.lan_ranges()]
    chain_rules += [_role({**from_jail, **egress, "target": "ACCEPT"}, ROLE_OUT),
                    _role({"target": "DROP"}, ROLE_DROPPED)]
    hooks = [
        Hook("filter", "FORWARD", tag({"in-interface": host_ifname, "target": chain}, owner)),
        Hook("filter", "FORWARD", tag({"out-interface": host_ifname, "target": chain}, owner)),
        # the jail may answer the host, never open anything on it
        Hook("filter", "INPUT", tag({"in-interface": host_ifname, **ESTABLISHED, "target": "ACCEPT"}, owner)),
        Hook("filter", "INPUT", tag({"in-interface": host_ifname, "target": "DROP"}, owner)),
        Hook("nat", "POSTROUTING", tag({"src": network, **egress, "target": "MASQUERADE"}, owner)),
    ]
    for publish in spec.publish:
        dnat = _dnat(publish, jail_address)
        hooks.append(Hook("nat", "PREROUTING", tag(dnat, owner)))
        # the host itself, at its own addresses (loopback would need route_localnet)
        local = dnat if publish.host_address else {"dst": "!127.0.0.0/8", **dnat}
        hooks.append(Hook("nat", "OUTPUT", tag(local, owner)))
    return JailRules(spec.name, tuple(chain_rules), tuple(hooks))


def _dnat(publish: Publish, jail_address: str) -> dict:
    """Packets to a host address and port, sent on to the jail."""
    rule: dict = {"protocol": publish.proto, publish.proto: {"dport": str(publish.host_port)},
                  "addrtype": {"dst-type": "LOCAL"}}
    if publish.host_address:
        rule["dst"] = publish.host_address
    return {**rule, "target": {"DNAT": {"to-destination": f"{jail_address}:{publish.jail_port}"}}}


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


def remove(rules: JailRules) -> None:
    """Remove a jail's hooks and its chain.

    Each hook is deleted as the exact rule it was (as `iptables -D` does, no
    rule decoded in Python); if one is not where it should be, every rule
    tagged with the jail's name is found by walking the built-in chains,
    which costs ~1 ms per 50 rules.
    """
    import iptc

    with batch("filter", "nat") as tables:
        try:
            for hook in rules.hooks:
                _chain(tables[hook.table], hook.chain).delete_rule(_encode(hook.rule))
        except iptc.IPTCError:
            _remove_owned(tables, lambda owner: owner == rules.chain)
        _delete_chains(tables["filter"], [rules.chain])


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


def read_counters(layouts: Mapping[str, Sequence[str]]) -> dict[str, dict[str, tuple[int, int]]]:
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
            totals = {role: (0, 0) for role in ROLES}
            for role, (packets, size) in counted:
                if role in totals:
                    totals[role] = (totals[role][0] + packets, totals[role][1] + size)
            result[name] = totals
    return result


def _raw_entries(table, chain: str) -> list:
    """The chain's ipt_entry structures, as libiptc holds them."""
    entries = []
    entry = table.first_rule(chain)
    while entry:
        entries.append(entry)
        entry = table.next_rule(entry)
    return entries


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
