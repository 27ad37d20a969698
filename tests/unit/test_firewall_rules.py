from appjail.helper.rules import (GUARD_CHAIN, ROLE_DROPPED, ROLE_IN, ROLE_OUT, build_guard_rules,
                                     build_jail_rules)
from appjail.model import LAN_RANGES, JailSpec


def rules_for(vpn=None, **spec):
    return build_jail_rules(JailSpec("web", vpn, **spec), "aj-web", "10.231.0.0/30", "10.231.0.2")


def role(rule):
    return rule["comment"]["comment"]


def without_role(rule):
    return {k: v for k, v in rule.items() if k != "comment"}


def test_nat_jail_chain():
    rules = rules_for()
    assert rules.chain == "aj-web"
    inbound, outbound, final = rules.chain_rules
    assert without_role(inbound) == {"out-interface": "aj-web",
                                     "conntrack": {"ctstate": "RELATED,ESTABLISHED"}, "target": "ACCEPT"}
    assert without_role(outbound) == {"in-interface": "aj-web", "src": "10.231.0.2",
                                      "out-interface": "!aj-+", "target": "ACCEPT"}
    assert without_role(final) == {"target": "DROP"}
    assert [role(r) for r in rules.chain_rules] == [ROLE_IN, ROLE_OUT, ROLE_DROPPED]
    assert rules.roles == (ROLE_IN, ROLE_OUT, ROLE_DROPPED)


def test_vpn_jail_accepts_only_the_vpn_interface_both_ways():
    inbound, outbound, _ = rules_for("wg0").chain_rules
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
    drops = [r for r in rules if r.get("dst") == "192.0.2.0/24"]
    assert drops == [{"in-interface": "aj-web", "src": "10.231.0.2", "dst": "192.0.2.0/24",
                      "target": "DROP", "comment": {"comment": ROLE_DROPPED}}]
    assert rules.index(drops[0]) < [role(r) for r in rules].index(ROLE_OUT)


def test_no_lan_spares_the_vpn_path():
    rules = rules_for("wg0", no_lan=True).chain_rules
    lan = [r for r in rules if r.get("dst") in LAN_RANGES]
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
