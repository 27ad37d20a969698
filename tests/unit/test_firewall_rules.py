from appjail.helper.firewall.rules import (DENY, GUARD_CHAIN, KILL_SWITCH, NO_LAN, NOT_ALLOWED, REASONS, RECORD,
                                  ROLE_DROPPED, ROLE_IN, ROLE_OUT, ROLE_RECORD, build_guard_rules,
                                  build_jail_rules, reason_code, reason_of)
import pytest

from appjail.model import LAN_RANGES, JailSpec, ValidationError


def rules_for(vpn=None, **spec):
    return build_jail_rules(JailSpec("web", vpn, **spec), "aj-web", "10.231.0.0/30", "10.231.0.2")


def role(rule):
    return rule["comment"]["comment"]


def without_role(rule):
    return {k: v for k, v in rule.items() if k != "comment"}


def test_nat_jail_chain():
    rules = rules_for()
    assert rules.chain == "aj-web"
    inbound, outbound, record, final = rules.chain_rules
    assert without_role(inbound) == {"out-interface": "aj-web",
                                     "conntrack": {"ctstate": "RELATED,ESTABLISHED"}, "target": "ACCEPT"}
    assert without_role(outbound) == {"in-interface": "aj-web", "src": "10.231.0.2",
                                      "out-interface": "!aj-+", "target": "ACCEPT"}
    assert without_role(final) == {"target": "DROP"}
    assert without_role(record) == {"in-interface": "aj-web",
                                     "target": {RECORD: {"jail": "web", "reason": NOT_ALLOWED}}}
    assert [role(r) for r in rules.chain_rules] == [ROLE_IN, ROLE_OUT, ROLE_RECORD, ROLE_DROPPED]
    assert rules.roles == (ROLE_IN, ROLE_OUT, ROLE_RECORD, ROLE_DROPPED)


def test_vpn_jail_accepts_only_the_vpn_interface_both_ways():
    inbound, *_, outbound, _, _ = rules_for("wg0").chain_rules
    assert inbound["in-interface"] == "wg0"
    assert outbound["out-interface"] == "wg0"
    masquerade = [h for h in rules_for("wg0").hooks if h.chain == "POSTROUTING"]
    assert [h.rule["out-interface"] for h in masquerade] == ["wg0"]


def test_hooks_are_tagged_and_input_drops_new_connections():
    hooks = rules_for().hooks
    assert all(h.rule["comment"] == {"comment": "aj-web"} for h in hooks)
    assert [(h.table, h.chain) for h in hooks] == [
        ("filter", "FORWARD"), ("filter", "FORWARD"), ("filter", "INPUT"), ("filter", "INPUT"),
        ("nat", "POSTROUTING")]
    accept, drop = (h.rule for h in hooks if h.chain == "INPUT")
    assert accept["conntrack"] == {"ctstate": "RELATED,ESTABLISHED"} and accept["target"] == "ACCEPT"
    assert drop["target"] == "DROP" and "conntrack" not in drop


def test_denied_ranges_drop_before_the_jails_traffic_is_accepted():
    rules = rules_for(deny=("192.0.2.0/24",)).chain_rules
    drops = [r for r in rules if r.get("dst") == "192.0.2.0/24" and r["target"] == "DROP"]
    assert drops == [{"in-interface": "aj-web", "src": "10.231.0.2", "dst": "192.0.2.0/24",
                      "target": "DROP", "comment": {"comment": ROLE_DROPPED}}]
    assert rules.index(drops[0]) < [role(r) for r in rules].index(ROLE_OUT)


def test_no_lan_spares_the_vpn_path():
    rules = rules_for("wg0", no_lan=True).chain_rules
    lan = [r for r in rules if r.get("dst") in LAN_RANGES and r["target"] == "DROP"]
    assert len(lan) == len(LAN_RANGES)
    assert all(r["out-interface"] == "!wg0" and r["target"] == "DROP" for r in lan)
    assert all("out-interface" not in r for r in rules_for(no_lan=True).chain_rules
               if r.get("dst") in LAN_RANGES)


def test_published_port_dnats_local_traffic_and_is_accepted_only_when_dnated():
    rules = rules_for(publish=("6000:8080", "192.0.2.7:53:5353/udp"))
    prerouting = [h.rule for h in rules.hooks if h.chain == "PREROUTING"]
    assert prerouting[0]["tcp"] == {"dport": "6000"}
    assert prerouting[0]["addrtype"] == {"dst-type": "LOCAL"} and "dst" not in prerouting[0]
    assert prerouting[0]["target"] == {"DNAT": {"to-destination": "10.231.0.2:8080"}}
    assert prerouting[1]["dst"] == "192.0.2.7" and prerouting[1]["udp"] == {"dport": "53"}
    output = [h.rule for h in rules.hooks if h.chain == "OUTPUT"]
    assert output[0]["dst"] == "!127.0.0.0/8" and output[1]["dst"] == "192.0.2.7"
    accepts = [r for r in rules.chain_rules if r.get("conntrack") == {"ctstate": "DNAT"}]
    assert [(r["protocol"], r[r["protocol"]]["dport"], role(r)) for r in accepts] == [
        ("tcp", "8080", ROLE_IN), ("udp", "5353", ROLE_IN)]


def test_guard_lets_jails_and_host_forwarding_through_and_drops_the_rest():
    rules = build_guard_rules(["eth1"])
    assert rules[-1] == {"target": "DROP"}
    assert {"in-interface": "eth1", "target": "RETURN"} in rules
    assert {"in-interface": "aj-+", "target": "RETURN"} in rules
    assert GUARD_CHAIN != GUARD_CHAIN.lower()  # never a jail's chain


def refusals(rules):
    """(reason recorded, what the record matches, what the drop after it matches) per drop."""
    chain = list(rules.chain_rules)
    found = []
    for index, rule in enumerate(chain):
        if role(rule) == ROLE_RECORD:
            drop = chain[index + 1]
            assert role(drop) == ROLE_DROPPED and drop["target"] == "DROP"
            record = rule["target"][RECORD]
            assert record["jail"] == "web"
            strip = lambda r: {k: v for k, v in without_role(r).items() if k != "target"}  # noqa: E731
            found.append((record["reason"], strip(rule), strip(drop)))
    return found


def test_every_drop_is_recorded_first_with_its_reason():
    rules = rules_for("wg0", deny=("192.0.2.0/24",), no_lan=True)
    found = refusals(rules)
    assert [reason for reason, _, _ in found] == (
        [KILL_SWITCH, DENY] + [NO_LAN] * len(LAN_RANGES) + [NOT_ALLOWED])
    assert all(record == drop for reason, record, drop in found if reason != NOT_ALLOWED)
    # every drop rule of the chain has its record
    assert len(found) == sum(role(r) == ROLE_DROPPED for r in rules.chain_rules)
    assert rules.roles.count(ROLE_RECORD) == len(found)


def test_the_kill_switch_is_traffic_turned_back_toward_the_jail():
    (kill_switch,) = [drop for reason, _, drop in refusals(rules_for("wg0")) if reason == KILL_SWITCH]
    assert kill_switch == {"in-interface": "aj-web", "src": "10.231.0.2", "out-interface": "aj-web"}
    chain = rules_for("wg0").chain_rules
    # before the final drop, after replies in
    assert 0 < chain.index({**kill_switch, "target": "DROP", "comment": {"comment": ROLE_DROPPED}}) < len(chain) - 1
    assert KILL_SWITCH not in [reason for reason, _, _ in refusals(rules_for())]


def test_not_allowed_records_only_what_the_jail_sent():
    (_, record, drop) = [f for f in refusals(rules_for()) if f[0] == NOT_ALLOWED][0]
    assert record == {"in-interface": "aj-web"} and drop == {}


def test_reason_codes_round_trip():
    assert [reason_of(reason_code(reason)) for reason in REASONS] == list(REASONS)
    assert reason_of(0) == reason_of(99) == NOT_ALLOWED


def test_a_port_published_on_loopback_is_the_hosts_alone():
    rules = rules_for(publish=("127.0.0.1:6003:8080",))
    hooked = {(h.chain, h.rule["target"] if isinstance(h.rule["target"], str) else "DNAT") for h in rules.hooks}
    # a packet from elsewhere to 127/8 is never DNATed into the jail
    assert ("PREROUTING", "DNAT") not in hooked
    output = [h.rule for h in rules.hooks if h.chain == "OUTPUT"]
    assert [(r["dst"], r["target"]) for r in output] == [
        ("127.0.0.1", {"DNAT": {"to-destination": "10.231.0.2:8080"}})]
    # the jail answers the host end of its veth, never its own loopback
    masquerade = [h.rule for h in rules.hooks if h.chain == "POSTROUTING" and h.rule.get("src") == "127.0.0.0/8"]
    assert [(r["out-interface"], r["target"]) for r in masquerade] == [("aj-web", "MASQUERADE")]
    assert not [h for h in rules_for(publish=("6000:8080",)).hooks if h.rule.get("src") == "127.0.0.0/8"]


def test_a_vpn_jail_may_publish_on_the_hosts_loopback_only():
    assert rules_for("wg0", publish=("127.0.0.1:6003:8080",)).publish[0].on_loopback
    for elsewhere in ("6003:8080", "192.0.2.7:6003:8080"):
        with pytest.raises(ValidationError, match="but on the host's loopback"):
            rules_for("wg0", publish=(elsewhere,))


def test_a_vpn_jails_forwarded_port_is_dnated_from_its_vpn_alone():
    rules = build_jail_rules(JailSpec("web", "wg0"), "aj-web", "10.231.0.0/30", "10.231.0.2", forwarded_port=50000)
    assert [(h.chain, without_role(h.rule)) for h in rules.hooks if h.table == "nat" and h.chain != "POSTROUTING"] == [
        ("PREROUTING", {"in-interface": "wg0", "protocol": proto, proto: {"dport": "50000"},
                        "target": {"DNAT": {"to-destination": "10.231.0.2:50000"}}}) for proto in ("tcp", "udp")]
    accepts = [r for r in rules.chain_rules if r.get("conntrack") == {"ctstate": "DNAT"}]
    assert [(r["protocol"], r[r["protocol"]]["dport"], r["dst"], role(r)) for r in accepts] == [
        ("tcp", "50000", "10.231.0.2", ROLE_IN), ("udp", "50000", "10.231.0.2", ROLE_IN)]
    assert rules_for("wg0").hooks == tuple(h for h in rules.hooks if h.chain != "PREROUTING")
