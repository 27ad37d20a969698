"""The nftables backend: a jail's rules in appjail's own table, through libnftables.

Everything lives in `table inet appjail`: base chains on the forward, input,
prerouting, output and postrouting hooks hold the jails' hooks (each rule
commented with its owner, `aj-NAME`), and each jail has a regular chain
`aj-NAME` whose rules carry a counter and their role as comment, so an admin
reads a jail's counters with `nft list table inet appjail`. A jail's rules
change in one transaction (one libnftables call). The table exists only while
something of appjail's is in it: the host's ruleset is what it was once the
last jail and the forwarding guard are gone.

Commands go in libnftables' JSON form, so no value is ever parsed as nft
syntax. The rules arrive in the backend-neutral form of `rules`; `encode`
translates that small vocabulary.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .firewall import Counters, FirewallError, Residue
from .rules import GUARD_CHAIN, PREFIX, JailRules, build_guard_rules, jail_chain, sum_by_role

FAMILY, TABLE = "inet", "appjail"
# (x_tables table, chain) of a hook -> our base chain: (name, type, hook, priority)
BASE_CHAINS = {
    ("filter", "FORWARD"): ("forward", "filter", "forward", 0),
    ("filter", "INPUT"): ("input", "filter", "input", 0),
    ("nat", "PREROUTING"): ("prerouting", "nat", "prerouting", -100),
    ("nat", "OUTPUT"): ("output", "nat", "output", -100),
    ("nat", "POSTROUTING"): ("postrouting", "nat", "postrouting", 100),
}
# the guard is a base chain of its own: its final drop must not end the
# evaluation of the jails' hooks, and a base chain's `return` means accept
GUARD_BASE = (GUARD_CHAIN, "filter", "forward", 10)
_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return", "MASQUERADE": "masquerade"}
_CT_STATES = {"RELATED": "related", "ESTABLISHED": "established", "NEW": "new", "INVALID": "invalid"}

Json = dict[str, Any]


class NftablesBackend:
    """FirewallBackend on nftables (see firewall.FirewallBackend).

    The handles of each owner's hook rules are remembered from the echo of
    their creation (or from the listing a sweep reads), so removing a jail
    deletes exactly its rules without listing the table; if a handle is
    stale (someone changed the table), the base chains are listed instead.
    """

    name = "nftables"

    def __init__(self) -> None:
        import nftables  # Debian's python3-nftables: libnftables' own binding

        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(True)
        self._lock = threading.Lock()  # one libnftables context, one user at a time
        self._hooks: dict[str, list[tuple[str, int]]] = {}  # owner -> [(base chain, handle)]

    # -- the FirewallBackend methods -----------------------------------------

    def install(self, rules: JailRules) -> None:
        commands = [*self._table_and_base_chains({hook.table_chain for hook in rules.hooks}),
                    {"create": {"chain": _obj(name=rules.chain)}}]  # fails if it exists
        commands += [{"add": {"rule": _rule(rules.chain, {**rule, "counter": True})}}
                     for rule in rules.chain_rules]
        commands += [{"add": {"rule": _rule(BASE_CHAINS[hook.table_chain][0], hook.rule)}}
                     for hook in rules.hooks]
        with self._lock:
            added = self._run(commands, echo=True)
            self._hooks[rules.chain] = _hook_handles(added)

    def remove(self, rules: JailRules) -> None:
        with self._lock:
            self._remove_owner(rules.chain, chain=rules.chain)
            self._drop_table_if_unused()

    def set_guard(self, forwarding_ifnames: Iterable[str] | None) -> None:
        with self._lock:
            self._remove_owner(GUARD_CHAIN, chain=GUARD_CHAIN)
            if forwarding_ifnames is None:
                self._drop_table_if_unused()
                return
            name, kind, hook, priority = GUARD_BASE
            commands = [*self._table_and_base_chains(()),
                        {"add": {"chain": _obj(name=name, type=kind, hook=hook, prio=priority,
                                               policy="accept")}}]
            commands += [{"add": {"rule": _rule(name, rule)}} for rule in build_guard_rules(forwarding_ifnames)]
            self._run(commands)
            self._hooks[GUARD_CHAIN] = []  # its rules go with its chain

    def sweep(self, live_owners: set[str]) -> Residue:
        residue = Residue()
        with self._lock:
            self._hooks.clear()
            listing = self._list_table()
            if listing is None:
                return residue
            commands = []
            for rule in _objects(listing, "rule"):
                owner = rule.get("comment", "")
                if rule["chain"] in _hook_chain_names() and owner.startswith(PREFIX):
                    if owner in live_owners:
                        self._hooks.setdefault(owner, []).append((rule["chain"], rule["handle"]))
                    else:
                        residue.owners.add(owner)
                        commands.append({"delete": {"rule": _obj(chain=rule["chain"], handle=rule["handle"])}})
            for chain in _objects(listing, "chain"):
                name = chain["name"]
                if not name.startswith(PREFIX):
                    continue
                if name in live_owners:
                    self._hooks.setdefault(name, [])
                else:
                    residue.chains.add(name)
                    commands.append({"delete": {"chain": _obj(name=name)}})
            if commands:
                self._run(commands)
            self._drop_table_if_unused()
        return residue

    def read_counters(self, layouts: Mapping[str, Sequence[str]]) -> Counters:
        """Summed by the role in each rule's comment: a rule added by hand counts for nothing."""
        with self._lock:
            if len(layouts) == 1:
                (name,) = layouts
                listing = self._list("chain", name=jail_chain(name))
            else:
                listing = self._list_table()
        counted: dict[str, list] = {jail_chain(name): [] for name in layouts}
        for rule in _objects(listing or {}, "rule"):
            if rule["chain"] in counted:
                counted[rule["chain"]].append((rule.get("comment"), _counter(rule)))
        chains = {chain["name"] for chain in _objects(listing or {}, "chain")}
        return {name: sum_by_role(counted[jail_chain(name)])
                for name in layouts if jail_chain(name) in chains}

    def list_owned(self) -> tuple[set[str], set[str]]:
        with self._lock:
            listing = self._list_table() or {}
        owners = {rule["comment"] for rule in _objects(listing, "rule")
                  if rule["chain"] in _hook_chain_names() and rule.get("comment", "").startswith(PREFIX)}
        chains = {chain["name"] for chain in _objects(listing, "chain") if chain["name"].startswith(PREFIX)}
        # the guard is hooked by being a base chain: it is its own hook
        return owners | (chains & {GUARD_CHAIN}), chains

    # -- the table ---------------------------------------------------------------

    def _table_and_base_chains(self, wanted: Iterable[tuple[str, str]]) -> list[Json]:
        """Idempotent `add`s: the table and the base chains these hooks need."""
        commands: list[Json] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
        for key in sorted(wanted):
            name, kind, hook, priority = BASE_CHAINS[key]
            commands.append({"add": {"chain": _obj(name=name, type=kind, hook=hook, prio=priority,
                                                   policy="accept")}})
        return commands

    def _remove_owner(self, owner: str, chain: str) -> None:
        """Delete the owner's hook rules and its chain in one transaction; what is gone is fine.

        With the handles remembered this is one call; when they are unknown
        or stale (someone else changed the table), the listing says what is left.
        """
        handles = self._hooks.pop(owner, None)
        delete_chain = {"delete": {"chain": _obj(name=chain)}}
        if handles is not None and self._try_run([*_deletions(handles), delete_chain]):
            return
        listing = self._list_table() or {}
        commands = _deletions([(rule["chain"], rule["handle"]) for rule in _objects(listing, "rule")
                               if rule["chain"] in _hook_chain_names() and rule.get("comment") == owner])
        if any(found["name"] == chain for found in _objects(listing, "chain")):
            commands.append(delete_chain)
        if commands:
            self._run(commands)

    def _drop_table_if_unused(self) -> None:
        """No jail and no guard: the table goes, and the host's ruleset is as it was."""
        if self._hooks:
            return
        listing = self._list_table()
        if listing is not None and not any(chain["name"].startswith(PREFIX)
                                           for chain in _objects(listing, "chain")):
            self._run([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}])

    def _list_table(self) -> Json | None:
        return self._list("table", family=FAMILY, name=TABLE)

    def _list(self, kind: str, **names: str) -> Json | None:
        """The listing of one object; None when it does not exist."""
        spec = {"family": FAMILY, "table": TABLE, **names} if kind != "table" else names
        rc, output, _error = self._json_cmd([{"list": {kind: spec}}])
        return output if rc == 0 else None

    def _run(self, commands: list[Json], echo: bool = False) -> Json:
        rc, output, error = self._json_cmd(commands, echo)
        if rc != 0:
            raise FirewallError("nftables refused a change: " + " ".join(error.split()))
        return output if isinstance(output, dict) else {}

    def _try_run(self, commands: list[Json]) -> bool:
        return self._json_cmd(commands)[0] == 0

    def _json_cmd(self, commands: list[Json], echo: bool = False) -> tuple[int, Any, str]:
        """One libnftables call (one transaction); echo returns what was added, with handles."""
        self._nft.set_echo_output(echo)
        return self._nft.json_cmd({"nftables": commands})


def encode(rule: Json) -> list[Json]:
    """nftables JSON statements for one rule of the `rules` vocabulary (comment aside)."""
    expr: list[Json] = []
    for key, meta in (("in-interface", "iifname"), ("out-interface", "oifname")):
        if key in rule:
            expr.append(_match({"meta": {"key": meta}}, _ifname(rule[key])))
    for key, field in (("src", "saddr"), ("dst", "daddr")):
        if key in rule:
            expr.append(_match({"payload": {"protocol": "ip", "field": field}}, _address(rule[key])))
    if "protocol" in rule:
        proto = rule["protocol"]
        expr.append(_match({"meta": {"key": "l4proto"}}, (False, proto)))
        if "dport" in rule.get(proto, {}):
            expr.append(_match({"payload": {"protocol": proto, "field": "dport"}},
                               (False, int(rule[proto]["dport"]))))
    if "conntrack" in rule:
        states = rule["conntrack"]["ctstate"].split(",")
        if states == ["DNAT"]:
            expr.append({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}})
        else:
            expr.append({"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                   "right": [_CT_STATES[state] for state in states]}})
    if rule.get("addrtype", {}).get("dst-type") == "LOCAL":
        expr.append(_match({"fib": {"result": "type", "flags": ["daddr"]}}, (False, "local")))
    if rule.get("counter"):
        expr.append({"counter": None})
    expr.append(_verdict(rule["target"]))
    return expr


def _verdict(target: str | Json) -> Json:
    if isinstance(target, dict):
        address, port = target["DNAT"]["to-destination"].rsplit(":", 1)
        return {"dnat": {"family": "ip", "addr": address, "port": int(port)}}
    if target in _VERDICTS:
        return {_VERDICTS[target]: None}
    return {"jump": {"target": target}}


def _match(left: Json, right: tuple[bool, Any]) -> Json:
    negated, value = right
    return {"match": {"op": "!=" if negated else "==", "left": left, "right": value}}


def _ifname(value: str) -> tuple[bool, str]:
    """x_tables' `!` and trailing `+` wildcard, as nftables writes them."""
    negated = value.startswith("!")
    name = value.lstrip("!")
    return negated, name[:-1] + "*" if name.endswith("+") else name


def _address(value: str) -> tuple[bool, Any]:
    negated = value.startswith("!")
    address = value.lstrip("!")
    if "/" in address:
        network, length = address.split("/")
        return negated, {"prefix": {"addr": network, "len": int(length)}}
    return negated, address


def _obj(**fields: Any) -> Json:
    """A chain or rule of our table, in libnftables' JSON form."""
    return {"family": FAMILY, "table": TABLE, **fields}


def _rule(chain: str, rule: Json) -> Json:
    """An `add rule` object; the rule's comment (its owner or role) becomes the nft comment."""
    comment = rule.get("comment", {}).get("comment")
    return _obj(chain=chain, expr=encode(rule), **({"comment": comment} if comment else {}))


def _hook_chain_names() -> set[str]:
    return {name for name, *_ in BASE_CHAINS.values()}


def _hook_handles(echo: Json) -> list[tuple[str, int]]:
    """(base chain, handle) of each hook rule in the echo of an `add` batch."""
    return [(rule["chain"], rule["handle"]) for item in echo.get("nftables", [])
            if (rule := item.get("add", {}).get("rule")) and rule["chain"] in _hook_chain_names()]


def _deletions(handles: Iterable[tuple[str, int]]) -> list[Json]:
    return [{"delete": {"rule": _obj(chain=chain, handle=handle)}} for chain, handle in handles]


def _objects(listing: Json, kind: str) -> list[Json]:
    return [item[kind] for item in listing.get("nftables", []) if kind in item]


def _counter(rule: Json) -> tuple[int, int]:
    for statement in rule.get("expr", []):
        if "counter" in statement and statement["counter"]:
            return statement["counter"]["packets"], statement["counter"]["bytes"]
    return 0, 0
