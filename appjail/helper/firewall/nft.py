"""The nftables backend: a jail's rules in appjail's own table, through libnftables.

Everything lives in `table inet appjail`. Its shared chains are fixed
(SKELETON) and reach each jail through maps and sets keyed by the jail's
facts, so a packet finds its jail in one lookup however many jails exist,
and adding or removing a jail is a few elements, never a search:

    forward      iifname/oifname vmap @jail_dev     "aj-NAME" : jump aj-NAME
    input        iifname @jail_in: replies accepted, anything new dropped
    postrouting  ip saddr @nat_out (out of any non-jail interface), or
                 ip saddr . oifname @vpn_out (out of the VPN only): masquerade
    prerouting,  host address . protocol . port @published: dnat to the jail
    output       (the host's own addresses; loopback excluded)
    output       127/8 address . protocol . port @published_lo: dnat to the jail (the
                 host's programs alone); postrouting masquerades 127/8 into a jail
    prerouting   VPN interface . protocol . port @forwarded: dnat to the jail (a port its
                 VPN's gateway forwards to a --vpn jail)

Each jail has a regular chain `aj-NAME` whose rules carry a counter and their
role as comment, so an admin reads a jail's counters with
`nft list table inet appjail`; every element carries its owner `aj-NAME` as
comment, which is how a sweep finds leftovers. A jail's rules change in one
transaction (one libnftables call). The table exists only while something
of appjail's is in it: the host's ruleset is what it was once the last jail
and the forwarding guard are gone.

Per-jail commands go in libnftables' JSON form, so no value is ever parsed
as nft syntax; the fixed skeleton, which holds no value, is written in nft's
own syntax for the reader. The chain's rules arrive in the backend-neutral
form of `rules`; `encode` translates that small vocabulary.

Blocked destinations: each jail has a set `aj-NAME` (beside its chain) keyed
by destination address, protocol, port and reason code, with a counter per
element, a timeout refreshed by each hit and `size` BLOCKED_MAX. Its record
rules `update` it right before each drop, so the kernel does all the work on
the packet path; the helper reads it only when asked (read_blocked), with a
netlink dump of its elements (nlraw), not through libnftables, which takes
20 ms to list 1000 of them. Listings of the table are terse (no elements);
the shared maps and sets are listed on their own where their owners matter.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ...model import PROTOCOLS, Publish
from ..kernel import nlraw
from .blocked import BLOCKED_MAX, BLOCKED_TIMEOUT_S, PORT_PROTOCOLS, Blocked, FirstSeen, oldest, protocol_name
from .backends import Counters, Damage, FirewallError, Residue
from .rules import (GUARD_CHAIN, LOOPBACK, PREFIX, RECORD, JailRules, build_guard_rules, jail_chain,
                    reason_code, reason_of, sum_by_role)

FAMILY, TABLE = "inet", "appjail"
SKELETON = f"""
table {FAMILY} {TABLE} {{
    map jail_dev {{ type ifname : verdict; }}
    set jail_in {{ type ifname; }}
    set nat_out {{ type ipv4_addr; flags interval; }}
    set vpn_out {{ type ipv4_addr . ifname; flags interval; }}
    map published {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; flags interval; }}
    map published_lo {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}
    map forwarded {{ type ifname . inet_proto . inet_service : ipv4_addr . inet_service; }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname vmap @jail_dev
        oifname vmap @jail_dev
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname @jail_in ct state established,related accept
        iifname @jail_in drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr @nat_out oifname != "{PREFIX}*" masquerade
        ip saddr . oifname @vpn_out masquerade
        ip saddr 127.0.0.0/8 oifname "{PREFIX}*" masquerade
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        meta l4proto {{ tcp, udp }} fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @published
        meta l4proto {{ tcp, udp }} dnat ip to iifname . meta l4proto . th dport map @forwarded
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        ip daddr != {LOOPBACK} meta l4proto {{ tcp, udp }} fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @published
        ip daddr {LOOPBACK} meta l4proto {{ tcp, udp }} dnat ip to ip daddr . meta l4proto . th dport map @published_lo
    }}
}}
"""
# the skeleton's maps and sets
KEYED = ("jail_dev", "jail_in", "nat_out", "vpn_out", "published", "published_lo", "forwarded")
MAPS = ("jail_dev", "published", "published_lo", "forwarded")
SKELETON_RULES = {"forward": 2, "input": 2, "postrouting": 3, "prerouting": 2, "output": 2}
ANY_ADDRESS = {"prefix": {"addr": "0.0.0.0", "len": 0}}
# the guard is a base chain of its own: its final drop must not end the
# evaluation of the jails' chains, and a base chain's `return` means accept
GUARD_BASE = (GUARD_CHAIN, "filter", "forward", 10)
_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return"}
_CT_STATES = {"RELATED": "related", "ESTABLISHED": "established", "NEW": "new", "INVALID": "invalid"}
# a blocked set's key: destination, protocol, port (0 for protocols without one), reason code
BLOCKED_KEY = ["ipv4_addr", "inet_proto", "inet_service", "mark"]

Json = dict[str, Any]


class NftablesBackend:
    """FirewallBackend on nftables (see firewall.FirewallBackend).

    `_owners` is what this process knows to be in the table (made here, or
    found by a sweep); the table is only dropped when the kernel agrees it
    holds nothing of anyone's.
    """

    name = "nftables"

    def __init__(self) -> None:
        import nftables  # Debian's python3-nftables: libnftables' own binding

        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._lock = threading.Lock()  # one libnftables context, one user at a time
        self._owners: set[str] = set()
        self._first_seen = FirstSeen()

    # -- the FirewallBackend methods -----------------------------------------

    def install(self, rules: JailRules) -> None:
        commands = [{"create": {"chain": _obj(name=rules.chain)}},  # fails if it exists
                    {"create": {"set": blocked_set(rules.chain)}}]
        commands += [{"add": {"rule": rule}} for neutral in rules.chain_rules
                     for rule in encode_chain_rule(rules.chain, neutral)]
        commands += [{"add": {"element": _obj(name=name, elem=elements)}}
                     for name, elements in _elements(rules, with_values=True).items()]
        with self._lock:
            if not self._try_run(commands):  # the table may be missing: made once, then again
                self._ensure_skeleton()
                self._run(commands)
            self._owners.add(rules.chain)

    def remove(self, rules: JailRules) -> None:
        commands = [{"delete": {"element": _obj(name=name, elem=keys)}}
                    for name, keys in _elements(rules, with_values=False).items()]
        delete_chain = [{"delete": {kind: _obj(name=rules.chain)}} for kind in ("chain", "set")]  # set after rules
        with self._lock:
            self._owners.discard(rules.chain)
            if not self._try_run([*commands, *delete_chain]):  # something was gone already
                self._remove_listed({rules.chain})
            self._drop_table_if_unused()
            self._first_seen.forget(rules.name)

    def set_guard(self, forwarding_ifnames: Iterable[str] | None) -> None:
        with self._lock:
            self._owners.discard(GUARD_CHAIN)
            self._try_run([{"delete": {"chain": _obj(name=GUARD_CHAIN)}}])
            if forwarding_ifnames is None:
                self._drop_table_if_unused()
                return
            self._ensure_skeleton()
            name, kind, hook, priority = GUARD_BASE
            commands = [{"add": {"chain": _obj(name=name, type=kind, hook=hook, prio=priority,
                                               policy="accept")}}]
            commands += [{"add": {"rule": _rule(name, rule)}} for rule in build_guard_rules(forwarding_ifnames)]
            self._run(commands)
            self._owners.add(GUARD_CHAIN)

    def sweep(self, live_owners: set[str]) -> Residue:
        with self._lock:
            listing = self._list_table(keyed=True)
            found = _owned(listing) if listing else (set(), set())
            owners, chains = found
            residue = Residue(owners - live_owners, chains - live_owners)
            if residue.owners or residue.chains:
                self._remove_listed(residue.owners | residue.chains, listing)
            self._owners = (owners | chains) & live_owners
            self._drop_table_if_unused()
        return residue

    def read_counters(self, layouts: Mapping[str, Sequence[str]]) -> Counters:
        """Summed by the role in each rule's comment: a rule added by hand counts for nothing.

        From a netlink dump of the rules (of the one chain, for one jail):
        libnftables' listing of a table with 200 jails takes ~140 ms.
        """
        counted = read_rule_counters(jail_chain(next(iter(layouts))) if len(layouts) == 1 else None)
        return {name: sum_by_role(counted[jail_chain(name)]) for name in layouts if jail_chain(name) in counted}

    def read_blocked(self, name: str, now: int) -> list[Blocked]:
        """The jail's set, element by element; when it is full, its least recently hit
        tenth goes, so new destinations find room (oldest first, as the timeouts do)."""
        chain = jail_chain(name)
        with self._lock:
            entries = read_set_elements(chain, now)
            if trim := room_made(chain, entries):
                self._try_run(trim)
            return self._first_seen.stamp(name, entries)

    def list_owned(self) -> tuple[set[str], set[str]]:
        with self._lock:
            listing = self._list_table(keyed=True)
        return _owned(listing) if listing else (set(), set())

    def damaged(self, expected: Sequence[JailRules], guard: bool) -> Damage:
        """From one listing: the skeleton's chains with their rules and its maps and sets; each jail's
        chain with its rules, its blocked set and its elements; the guard's base chain with rules."""
        wanted = {rules.chain for rules in expected} | ({GUARD_CHAIN} if guard else set())
        with self._lock:
            listing = self._list_table(keyed=True)
        if listing is None:
            return Damage(wanted, shared=True)
        rules_in = Counter(rule["chain"] for rule in _objects(listing, "rule"))
        keyed = {found["name"]: found.get("elem", []) for kind in ("map", "set") for found in _objects(listing, kind)}
        if any(rules_in[chain] < count for chain, count in SKELETON_RULES.items()) or not set(KEYED) <= set(keyed):
            return Damage(wanted, shared=True)
        owned = {name: Counter(_owner(item) for item in keyed[name]) for name in KEYED}
        damage = Damage({GUARD_CHAIN} if guard and not rules_in[GUARD_CHAIN] else set())
        for rules in expected:
            elements = _elements(rules, with_values=True)
            # fewer, not different: a rule an admin added to the chain is theirs to keep
            if (rules.chain not in keyed or rules_in[rules.chain] < _rule_count(rules)
                    or any(owned[name][rules.chain] < len(elements.get(name, ())) for name in KEYED)):
                damage.owners.add(rules.chain)
        return damage

    # -- the table ---------------------------------------------------------------

    def _ensure_skeleton(self) -> None:
        """The table with its maps, sets and shared chains, unless it exists."""
        rc, output, _error = self._json_cmd([{"list": {"tables": {"family": FAMILY}}}])
        if rc == 0 and any(table["name"] == TABLE for table in _objects(output, "table")):
            return
        rc, _output, error = self._nft.cmd(SKELETON)
        if rc != 0:
            raise FirewallError("nftables refused appjail's table: " + " ".join(error.split()))

    def _remove_listed(self, owners: set[str], listing: Json | None = None) -> None:
        """Delete, as found in the listing, every element owned by and every chain named in owners."""
        listing = listing or self._list_table(keyed=True) or {}
        commands = []
        for kind in ("map", "set"):
            for keyed in _objects(listing, kind):
                keys = [_key(item) for item in keyed.get("elem", []) if _owner(item) in owners]
                if keyed["name"] in KEYED and keys:
                    commands.append({"delete": {"element": _obj(name=keyed["name"], elem=keys)}})
        commands += [{"delete": {kind: _obj(name=found["name"])}} for kind in ("chain", "set")  # sets after rules
                     for found in _objects(listing, kind) if found["name"] in owners]
        if commands:
            self._run(commands)

    def _drop_table_if_unused(self) -> None:
        """No jail and no guard: the table goes, and the host's ruleset is as it was."""
        if self._owners:
            return
        listing = self._list_table(keyed=True)
        if listing is not None and _owned(listing) == (set(), set()):
            self._run([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}])

    def _list_table(self, keyed: bool = False) -> Json | None:
        """The table without set elements (a blocked set may hold a thousand), and with
        keyed, the elements of the shared maps and sets too; None without the table."""
        listing = self._list("table", terse=True, family=FAMILY, name=TABLE)
        if listing is not None and keyed:
            for name in KEYED:
                kind = "map" if name in MAPS else "set"
                listing["nftables"] += (self._list(kind, name=name) or {}).get("nftables", [])
        return listing

    def _list(self, kind: str, terse: bool = False, **names: str) -> Json | None:
        """The listing of one object; None when it does not exist."""
        spec = {"family": FAMILY, "table": TABLE, **names} if kind != "table" else names
        self._nft.set_terse_output(terse)
        rc, output, _error = self._json_cmd([{"list": {kind: spec}}])
        return output if rc == 0 else None

    def _run(self, commands: list[Json]) -> None:
        rc, _output, error = self._json_cmd(commands)
        if rc != 0:
            raise FirewallError("nftables refused a change: " + " ".join(error.split()))

    def _try_run(self, commands: list[Json]) -> bool:
        return self._json_cmd(commands)[0] == 0

    def _json_cmd(self, commands: list[Json]) -> tuple[int, Any, str]:
        """One libnftables call: one transaction."""
        return self._nft.json_cmd({"nftables": commands})


def _elements(rules: JailRules, with_values: bool) -> dict[str, list[Json]]:
    """The jail's elements in the skeleton's maps and sets, by map or set: keys, or keys and values."""
    owner = rules.chain

    def element(key: Any, value: Any = None) -> Any:
        item = {"elem": {"val": key, "comment": owner}} if with_values else key
        return [item, value] if with_values and value is not None else item

    network, length = rules.network.split("/")
    prefix = {"prefix": {"addr": network, "len": int(length)}}
    found = {"jail_dev": [element(rules.ifname, {"jump": {"target": rules.chain}})],
             "jail_in": [element(rules.ifname)]}
    if rules.vpn:
        found["vpn_out"] = [element({"concat": [prefix, rules.vpn]})]
    else:
        found["nat_out"] = [element(prefix)]
    for publish in rules.publish:
        found.setdefault("published_lo" if publish.on_loopback else "published", []).append(
            element(_published_key(publish), {"concat": [rules.jail_address, publish.jail_port]}))
    if rules.forwarded_port:
        found["forwarded"] = [element({"concat": [rules.vpn, proto, rules.forwarded_port]},
                                      {"concat": [rules.jail_address, rules.forwarded_port]})
                              for proto in PROTOCOLS]
    return found


def _rule_count(rules: JailRules) -> int:
    """How many nftables rules the jail's chain holds (a record rule is two)."""
    return sum(len(encode_chain_rule(rules.chain, rule)) for rule in rules.chain_rules)


def _published_key(publish: Publish) -> Json:
    return {"concat": [publish.host_address or ANY_ADDRESS, publish.proto, publish.host_port]}


def _owned(listing: Json) -> tuple[set[str], set[str]]:
    """(owners of elements in the shared maps and sets, and the guard; aj-* chains) of a listing."""
    owners = {owner for kind in ("map", "set") for keyed in _objects(listing, kind) if keyed["name"] in KEYED
              for item in keyed.get("elem", []) if (owner := _owner(item))}
    chains = {found["name"] for kind in ("chain", "set") for found in _objects(listing, kind)
              if found["name"].startswith(PREFIX)}  # a jail's chain, and its blocked set
    # the guard is hooked by being a base chain: it is its own hook
    return owners | (chains & {GUARD_CHAIN}), chains


def _owner(item: Any) -> str | None:
    """The comment of a listed element: [{"elem": {...}}, value] in a map, {"elem": {...}} in a set."""
    element = item[0] if isinstance(item, list) else item
    return element.get("elem", {}).get("comment") if isinstance(element, dict) else None


def _key(item: Any) -> Any:
    element = item[0] if isinstance(item, list) else item
    return element["elem"]["val"]


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


def blocked_set(name: str) -> Json:
    """A jail's blocked destinations: counted per element, timed out, bounded."""
    return _obj(name=name, type=BLOCKED_KEY, flags=["timeout"], timeout=BLOCKED_TIMEOUT_S, size=BLOCKED_MAX,
                stmt=[{"counter": None}])


NFT_MSG_GETRULE = (10 << 8) | 7  # subsystem nf_tables
NFT_MSG_GETSETELEM = (10 << 8) | 13
NFPROTO_INET = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_EXPR = 1, 5, 7
NFTA_DATA_VALUE = 1
NFTA_EXPR_DATA = 2
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA = 1, 2, 4, 7
NFTA_EXPR_NAME = 1
UDATA_RULE_COMMENT = 0  # libnftnl's type-length-value user data: the rule's comment
# the key as the kernel holds it: each part in 4-byte registers; a mark in host order
_KEY = struct.Struct("=4sB3x2s2xI")


def read_rule_counters(chain: str | None = None) -> dict[str, list[tuple[str | None, tuple[int, int]]]]:
    """(comment, (packets, bytes)) of each rule with a counter, by chain: the table's, or one chain's."""
    names = [nlraw.attribute(NFTA_RULE_TABLE, TABLE.encode() + b"\0")]
    if chain is not None:
        names.append(nlraw.attribute(NFTA_RULE_CHAIN, chain.encode() + b"\0"))
    request = nlraw.request(NFT_MSG_GETRULE, nlraw.NLM_F_REQUEST | nlraw.NLM_F_DUMP, NFPROTO_INET, 0, *names)
    found: dict[str, list[tuple[str | None, tuple[int, int]]]] = {}
    try:
        for _kind, data, start, end in nlraw.dump(request):
            rule = nlraw.attributes(data, start + 4, end)
            counter = _rule_counter(rule.get(NFTA_RULE_EXPRESSIONS, b""))
            if counter is not None:
                found.setdefault(rule[NFTA_RULE_CHAIN].rstrip(b"\0").decode(), []).append(
                    (_rule_comment(rule.get(NFTA_RULE_USERDATA, b"")), counter))
    except FileNotFoundError:  # no table, or no such chain
        return {}
    return found


def _rule_counter(expressions: bytes) -> tuple[int, int] | None:
    """(packets, bytes) of a rule's counter expression, if it has one."""
    for item in _list_items(expressions):
        expression = nlraw.nested(item)
        if expression.get(NFTA_EXPR_NAME, b"").rstrip(b"\0") == b"counter":
            counter = nlraw.nested(expression.get(NFTA_EXPR_DATA, b""))
            return tuple(struct.unpack("!Q", counter.get(kind, bytes(8)))[0]  # type: ignore[return-value]
                         for kind in (NFTA_COUNTER_PACKETS, NFTA_COUNTER_BYTES))
    return None


def _rule_comment(userdata: bytes) -> str | None:
    offset = 0
    while offset + 2 <= len(userdata):
        kind, length = userdata[offset], userdata[offset + 1]
        if kind == UDATA_RULE_COMMENT:
            return userdata[offset + 2:offset + 2 + length].rstrip(b"\0").decode()
        offset += 2 + length
    return None


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


def room_made(name: str, entries: list[Blocked]) -> list[Json]:
    """The commands that delete the least recently hit tenth of blocked set NAME when it is full; none else."""
    if len(entries) < BLOCKED_MAX:
        return []
    return [{"delete": {"element": _obj(name=name, elem=[{"concat": blocked_key(entry)}
                                                         for entry in oldest(entries, BLOCKED_MAX // 10)])}}]


def blocked_key(entry: Blocked) -> list:
    return [entry.dst, entry.proto, entry.dport, reason_code(entry.reason)]


def _verdict(target: str) -> Json:
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
    """A chain, rule or element of our table, in libnftables' JSON form."""
    return {"family": FAMILY, "table": TABLE, **fields}


def _rule(chain: str, rule: Json) -> Json:
    """An `add rule` object; the rule's comment (its role) becomes the nft comment."""
    comment = rule.get("comment", {}).get("comment")
    return _obj(chain=chain, expr=encode(rule), **({"comment": comment} if comment else {}))


def _objects(listing: Json, kind: str) -> list[Json]:
    return [item[kind] for item in listing.get("nftables", []) if kind in item]
