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

Blocked destinations: each jail has a set `aj-NAME` (beside its chain) keyed
by destination address, protocol, port and reason code, with a counter per
element, a timeout refreshed by each hit and `size` BLOCKED_MAX. Its record
rules `update` it right before each drop, so the kernel does all the work on
the packet path; the helper reads it only when asked (read_blocked), with a
netlink dump of its elements (nlraw), not through libnftables, which takes
20 ms to list 1000 of them.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from . import nlraw
from .blocked import BLOCKED_MAX, BLOCKED_TIMEOUT_S, PORT_PROTOCOLS, Blocked, FirstSeen, oldest, protocol_name
from .firewall import Counters, FirewallError, Residue
from .rules import (GUARD_CHAIN, PREFIX, RECORD, JailRules, build_guard_rules, jail_chain, reason_code,
                    reason_of, sum_by_role)

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
# a blocked set's key: destination, protocol, port (0 for protocols without one), reason code
BLOCKED_KEY = ["ipv4_addr", "inet_proto", "inet_service", "mark"]

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
        self._first_seen = FirstSeen()

    # -- the FirewallBackend methods -----------------------------------------

    def install(self, rules: JailRules) -> None:
        commands = [*self._table_and_base_chains({hook.table_chain for hook in rules.hooks}),
                    {"create": {"chain": _obj(name=rules.chain)}},  # fails if it exists
                    {"create": {"set": _blocked_set(rules.chain)}}]
        commands += [{"add": {"rule": rule}} for neutral in rules.chain_rules
                     for rule in encode_chain_rule(rules.chain, neutral)]
        commands += [{"add": {"rule": _rule(BASE_CHAINS[hook.table_chain][0], hook.rule)}}
                     for hook in rules.hooks]
        with self._lock:
            added = self._run(commands, echo=True)
            self._hooks[rules.chain] = _hook_handles(added)

    def remove(self, rules: JailRules) -> None:
        with self._lock:
            self._remove_owner(rules.chain, chain=rules.chain)
            self._drop_table_if_unused()
            self._first_seen.forget(rules.name)

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
            commands += [{"delete": {"set": _obj(name=name)}} for name in _set_names(listing)
                         if name.startswith(PREFIX) and name not in live_owners]
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

    def read_blocked(self, name: str, now: int) -> list[Blocked]:
        """The jail's set, element by element; when it is full, its least recently hit
        tenth goes, so new destinations find room (oldest first, as the timeouts do)."""
        chain = jail_chain(name)
        with self._lock:
            entries = read_set_elements(chain, now)
            if len(entries) >= BLOCKED_MAX:
                self._try_run([{"delete": {"element": _obj(name=chain, elem=[
                    {"concat": _blocked_key(entry)} for entry in oldest(entries, BLOCKED_MAX // 10)])}}])
            return self._first_seen.stamp(name, entries)

    def list_owned(self) -> tuple[set[str], set[str]]:
        with self._lock:
            listing = self._list_table() or {}
        owners = {rule["comment"] for rule in _objects(listing, "rule")
                  if rule["chain"] in _hook_chain_names() and rule.get("comment", "").startswith(PREFIX)}
        chains = {name for name in [chain["name"] for chain in _objects(listing, "chain")] + _set_names(listing)
                  if name.startswith(PREFIX)}
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
        """Delete the owner's hook rules and its chain; whatever is already gone is fine."""
        handles = self._hooks.pop(owner, None)
        if handles == [] or handles and self._try_run(
                [{"delete": {"rule": _obj(chain=base, handle=handle)}} for base, handle in handles]):
            handles = []
        else:  # unknown or stale handles: find the owner's rules in the listing
            handles = [(rule["chain"], rule["handle"]) for rule in _objects(self._list_table() or {}, "rule")
                       if rule["chain"] in _hook_chain_names() and rule.get("comment") == owner]
        commands = [{"delete": {"rule": _obj(chain=base, handle=handle)}} for base, handle in handles]
        if self._chain_exists(chain):
            commands.append({"delete": {"chain": _obj(name=chain)}})
        if self._try_run([{"list": {"set": _obj(name=chain)}}], terse=True):  # after the rules using it
            commands.append({"delete": {"set": _obj(name=chain)}})
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

    def _chain_exists(self, name: str) -> bool:
        return self._try_run([{"list": {"chain": _obj(name=name)}}])

    def _list_table(self) -> Json | None:
        """The whole table, without the elements of the blocked sets."""
        return self._list("table", terse=True, family=FAMILY, name=TABLE)

    def _list(self, kind: str, terse: bool = False, **names: str) -> Json | None:
        """The listing of one object; None when it does not exist."""
        spec = {"family": FAMILY, "table": TABLE, **names} if kind != "table" else names
        rc, output, _error = self._json_cmd([{"list": {kind: spec}}], terse=terse)
        return output if rc == 0 else None

    def _run(self, commands: list[Json], echo: bool = False) -> Json:
        rc, output, error = self._json_cmd(commands, echo)
        if rc != 0:
            raise FirewallError("nftables refused a change: " + " ".join(error.split()))
        return output if isinstance(output, dict) else {}

    def _try_run(self, commands: list[Json], terse: bool = False) -> bool:
        return self._json_cmd(commands, terse=terse)[0] == 0

    def _json_cmd(self, commands: list[Json], echo: bool = False, terse: bool = False) -> tuple[int, Any, str]:
        """One libnftables call (one transaction); echo returns what was added, with handles."""
        self._nft.set_echo_output(echo)
        self._nft.set_terse_output(terse)
        return self._nft.json_cmd({"nftables": commands})


def encode(rule: Json) -> list[Json]:
    """nftables JSON statements for one rule of the `rules` vocabulary (comment aside)."""
    expr = _matches(rule)
    if rule.get("counter"):
        expr.append({"counter": None})
    expr.append(_verdict(rule["target"]))
    return expr


def _matches(rule: Json) -> list[Json]:
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
    return expr


def encode_chain_rule(chain: str, rule: Json) -> list[Json]:
    """A rule of a jail's chain as `add rule` objects: counted, or for a record two
    (protocols with ports, and without: `th dport` of an ICMP packet is its checksum)."""
    record = rule["target"][RECORD] if isinstance(rule["target"], dict) and RECORD in rule["target"] else None
    if record is None:
        return [_rule(chain, {**rule, "counter": True})]
    code = reason_code(record["reason"])
    address = {"payload": {"protocol": "ip", "field": "daddr"}}
    protocol = {"meta": {"key": "l4proto"}}
    records = []
    for op, port in (("==", {"payload": {"protocol": "th", "field": "dport"}}), ("!=", 0)):
        update = {"set": {"op": "update", "set": "@" + jail_chain(record["jail"]),
                          "elem": {"concat": [address, protocol, port, code]}}}
        kind = {"match": {"op": op, "left": protocol, "right": {"set": sorted(PORT_PROTOCOLS.values())}}}
        records.append(_obj(chain=chain, expr=[*_matches(rule), kind, update], comment=rule["comment"]["comment"]))
    return records


def _blocked_set(name: str) -> Json:
    """A jail's blocked destinations: counted per element, timed out, bounded."""
    return _obj(name=name, type=BLOCKED_KEY, flags=["timeout"], timeout=BLOCKED_TIMEOUT_S, size=BLOCKED_MAX,
                stmt=[{"counter": None}])


NFT_MSG_GETSETELEM = (10 << 8) | 13  # subsystem nf_tables
NFPROTO_INET = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_EXPR = 1, 5, 7
NFTA_DATA_VALUE = 1
NFTA_EXPR_DATA = 2
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2
# the key as the kernel holds it: each part in 4-byte registers; a mark in host order
_KEY = struct.Struct("=4sB3x2s2xI")


def read_set_elements(name: str, now: int) -> list[Blocked]:
    """The elements of blocked set NAME (a netlink dump); none when the set does not exist."""
    request = nlraw.request(NFT_MSG_GETSETELEM, nlraw.NLM_F_REQUEST | nlraw.NLM_F_DUMP, NFPROTO_INET, 0,
                            nlraw.attribute(NFTA_SET_ELEM_LIST_TABLE, TABLE.encode() + b"\0"),
                            nlraw.attribute(NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0"))
    entries = []
    try:
        for _kind, data, start, end in nlraw.dump(request):
            listed = nlraw.attributes(data, start + 4, end).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
            entries += [_element(element, now) for element in _list_items(listed)]
    except FileNotFoundError:
        return []
    return entries


def _list_items(value: bytes) -> Iterator[bytes]:
    """The NFTA_LIST_ELEMs of a nested list, in order (attributes() keeps one per type)."""
    offset = 0
    while offset + 4 <= len(value):
        length = struct.unpack_from("=H", value, offset)[0]
        if length < 4:
            return
        yield value[offset + 4:offset + length]
        offset += (length + 3) & ~3


def _element(value: bytes, now: int) -> Blocked:
    """One element: its key, counter and time left; its last hit is when its timeout was refreshed."""
    element = nlraw.nested(value)
    key = nlraw.nested(element[NFTA_SET_ELEM_KEY])[NFTA_DATA_VALUE]
    address, protocol, port, code = _KEY.unpack_from(key.ljust(_KEY.size, b"\0"))
    expiration_ms = struct.unpack("!Q", element[NFTA_SET_ELEM_EXPIRATION])[0] \
        if NFTA_SET_ELEM_EXPIRATION in element else BLOCKED_TIMEOUT_S * 1000
    counter = nlraw.nested(nlraw.nested(element.get(NFTA_SET_ELEM_EXPR, b"")).get(NFTA_EXPR_DATA, b""))
    packets, size = (struct.unpack("!Q", counter.get(kind, bytes(8)))[0]
                     for kind in (NFTA_COUNTER_PACKETS, NFTA_COUNTER_BYTES))
    last = now - (BLOCKED_TIMEOUT_S - expiration_ms // 1000)
    return Blocked(protocol_name(protocol), socket.inet_ntoa(address),
                   struct.unpack("!H", port)[0], reason_of(code), packets, size, last, last)


def _blocked_key(entry: Blocked) -> list:
    return [entry.dst, entry.proto, entry.dport, reason_code(entry.reason)]


def _set_names(listing: Json) -> list[str]:
    return [item["name"] for item in _objects(listing, "set")]


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


def _objects(listing: Json, kind: str) -> list[Json]:
    return [item[kind] for item in listing.get("nftables", []) if kind in item]


def _counter(rule: Json) -> tuple[int, int]:
    for statement in rule.get("expr", []):
        if "counter" in statement and statement["counter"]:
            return statement["counter"]["packets"], statement["counter"]["bytes"]
    return 0, 0
