"""Which backend the helper picks, and how the nftables backend spells the rules."""

import struct

import pytest

from appjail.helper.firewall import backends, choice
from appjail.helper.firewall.blocked import BLOCKED_MAX, BLOCKED_TIMEOUT_S, Blocked
from appjail.helper.firewall.nft import blocked_set, _element, _elements, encode, encode_chain_rule
from appjail.helper.firewall.rules import build_guard_rules, build_jail_rules
from appjail.helper.kernel import nlraw
from appjail.helper.main import main
from appjail.model import JailSpec, Publish


@pytest.fixture
def host(monkeypatch):
    """A host whose legacy tables and iptables build the test sets."""
    monkeypatch.delenv(choice.SETTING_ENV, raising=False)
    facts = {"tables": [], "build": "nft"}
    monkeypatch.setattr(backends, "legacy_tables", lambda: facts["tables"])
    monkeypatch.setattr(choice, "iptables_build", lambda: facts["build"])
    return facts


def test_nftables_unless_the_host_uses_legacy(host):
    assert choice.choose().name == "nftables"
    host["build"] = "legacy"
    assert choice.choose() == choice.Choice("xtables", "the host's iptables command is the legacy build")
    host["build"], host["tables"] = "nft", ["filter", "nat"]
    chosen = choice.choose()
    assert chosen.name == "xtables" and "filter, nat" in chosen.reason


def test_a_kernel_without_legacy_x_tables_gets_nftables(host):
    host["tables"], host["build"] = None, "legacy"
    assert choice.choose() == choice.Choice("nftables", "this kernel has no legacy x_tables")


def test_the_setting_wins(host, monkeypatch):
    host["build"] = "legacy"
    assert choice.choose("nftables").name == "nftables"
    monkeypatch.setenv(choice.SETTING_ENV, "nftables")
    assert choice.choose().name == "nftables"
    assert choice.choose("xtables").name == "xtables"


@pytest.mark.parametrize("setting", ["nft", "iptables", "NFTABLES", "legacy"])
def test_an_unknown_backend_is_a_clear_error_at_helper_start(host, capsys, setting):
    assert main(["--firewall", setting]) == 2
    assert capsys.readouterr().err == (f"appjail-helper: unknown firewall backend {setting!r}: "
                                       "choose auto, nftables, xtables\n")


def _match(meta_or_payload, op, right):
    return {"match": {"op": op, "left": meta_or_payload, "right": right}}


IIF = {"meta": {"key": "iifname"}}
OIF = {"meta": {"key": "oifname"}}
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}


def test_encode_interfaces_addresses_and_wildcards():
    assert encode({"in-interface": "aj-web", "src": "10.231.0.2", "out-interface": "!aj-+",
                   "target": "ACCEPT"}) == [
        _match(IIF, "==", "aj-web"), _match(OIF, "!=", "aj-*"), _match(SADDR, "==", "10.231.0.2"),
        {"accept": None}]
    assert encode({"dst": "!127.0.0.0/8", "target": "DROP"}) == [
        _match(DADDR, "!=", {"prefix": {"addr": "127.0.0.0", "len": 8}}), {"drop": None}]


def test_encode_conntrack_counter_and_jump():
    assert encode({"out-interface": "aj-web", "conntrack": {"ctstate": "RELATED,ESTABLISHED"},
                   "counter": True, "target": "aj-web"}) == [
        _match(OIF, "==", "aj-web"),
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["related", "established"]}},
        {"counter": None}, {"jump": {"target": "aj-web"}}]


def test_a_jail_reaches_the_shared_chains_through_keyed_elements():
    nat = build_jail_rules(JailSpec("web", publish=(Publish(6000, 8080, "udp", "192.0.2.7"), Publish(6001, 80))),
                           "aj-web", "10.231.0.0/30", "10.231.0.2")
    owned = {"comment": "aj-web"}
    assert _elements(nat, with_values=True) == {
        "jail_dev": [[{"elem": {"val": "aj-web", **owned}}, {"jump": {"target": "aj-web"}}]],
        "jail_in": [{"elem": {"val": "aj-web", **owned}}],
        "nat_out": [{"elem": {"val": {"prefix": {"addr": "10.231.0.0", "len": 30}}, **owned}}],
        "published": [
            [{"elem": {"val": {"concat": ["192.0.2.7", "udp", 6000]}, **owned}}, {"concat": ["10.231.0.2", 8080]}],
            [{"elem": {"val": {"concat": [{"prefix": {"addr": "0.0.0.0", "len": 0}}, "tcp", 6001]}, **owned}},
             {"concat": ["10.231.0.2", 80]}]]}
    vpn = build_jail_rules(JailSpec("web", vpn="wg0", publish=(Publish(6003, 8080, "tcp", "127.0.0.1"),)),
                           "aj-web", "10.231.0.0/30", "10.231.0.2")
    assert _elements(vpn, with_values=False) == {
        "jail_dev": ["aj-web"], "jail_in": ["aj-web"],
        "vpn_out": [{"concat": [{"prefix": {"addr": "10.231.0.0", "len": 30}}, "wg0"]}],
        "published_lo": [{"concat": ["127.0.0.1", "tcp", 6003]}]}  # output only: never prerouting
    forwarded = build_jail_rules(JailSpec("web", vpn="wg0"), "aj-web", "10.231.0.0/30", "10.231.0.2",
                                 forwarded_port=50000)
    assert _elements(forwarded, with_values=True)["forwarded"] == [
        [{"elem": {"val": {"concat": ["wg0", proto, 50000]}, **owned}}, {"concat": ["10.231.0.2", 50000]}]
        for proto in ("tcp", "udp")]


def test_the_ct_status_dnat_accept_of_a_published_port():
    rules = build_jail_rules(JailSpec("web", publish=(Publish(6000, 8080),)), "aj-web", "10.231.0.0/30", "10.231.0.2")
    accept_dnat = next(rule for rule in rules.chain_rules if "conntrack" in rule
                       and rule["conntrack"]["ctstate"] == "DNAT")
    assert {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}} in encode(accept_dnat)


@pytest.mark.parametrize("spec", [
    JailSpec("web", vpn="wg0", deny=("192.0.2.0/24",), no_lan=True),
    JailSpec("web", publish=(Publish(6000, 8080),), deny=("192.0.2.0/24",), no_lan=True)])
def test_every_rule_of_every_jail_shape_encodes(spec):
    rules = build_jail_rules(spec, "aj-web", "10.231.0.0/30", "10.231.0.2")
    verdicts = {"accept", "drop", "return", "jump"}
    for rule in build_guard_rules(["eth0"]):
        assert set(encode(rule)[-1]) <= verdicts, rule
    for rule in rules.chain_rules:
        for added in encode_chain_rule(rules.chain, rule):
            last = added["expr"][-1]
            assert set(last) <= verdicts or last["set"]["op"] == "update", rule
            assert added["comment"] == rule["comment"]["comment"]


def test_a_record_updates_the_jails_set_with_port_or_without():
    rules = build_jail_rules(JailSpec("web", deny=("192.0.2.0/24",)), "aj-web", "10.231.0.0/30", "10.231.0.2")
    record = next(rule for rule in rules.chain_rules if rule.get("dst") == "192.0.2.0/24")
    with_port, without = encode_chain_rule("aj-web", record)
    daddr, l4proto = {"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}
    assert with_port["expr"][-1] == {"set": {"op": "update", "set": "@aj-web", "elem": {"concat": [
        daddr, l4proto, {"payload": {"protocol": "th", "field": "dport"}}, 2]}}}
    assert without["expr"][-1]["set"]["elem"]["concat"] == [daddr, l4proto, 0, 2]
    assert [e["match"]["op"] for e in (with_port["expr"][-2], without["expr"][-2])] == ["==", "!="]
    # the same matches as the drop that follows it, and no counter of its own
    assert _match({"payload": {"protocol": "ip", "field": "daddr"}}, "==",
                  {"prefix": {"addr": "192.0.2.0", "len": 24}}) in with_port["expr"]
    assert not any("counter" in e for e in with_port["expr"] + without["expr"])


def test_the_blocked_set_is_bounded_and_read_back():
    declared = blocked_set("aj-web")
    assert declared["size"] == BLOCKED_MAX and declared["timeout"] == BLOCKED_TIMEOUT_S
    assert declared["stmt"] == [{"counter": None}] and declared["name"] == "aj-web"
    # an element as the kernel dumps it: key registers, expiration in ms, its counter
    key = bytes([192, 0, 2, 80]) + bytes([6, 0, 0, 0]) + struct.pack("!H", 80) + b"\0\0" + struct.pack("=I", 2)
    counter = nlraw.attribute(1, b"counter\0") + nlraw.attribute(2, nlraw.attribute(1, struct.pack("!Q", 180))
                                                                + nlraw.attribute(2, struct.pack("!Q", 3)))
    element = (nlraw.attribute(1, nlraw.attribute(1, key))
               + nlraw.attribute(5, struct.pack("!Q", (BLOCKED_TIMEOUT_S - 7) * 1000 + 400))
               + nlraw.attribute(7, counter))
    assert _element(element, 1000) == Blocked("tcp", "192.0.2.80", 80, "deny", 3, 180, 993, 993)
