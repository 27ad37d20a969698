from appjail.helper.firewall import GUARD_CHAIN, build_guard_rules, build_jail_rules


def rules_for(vpn):
    return build_jail_rules("web", "aj-web", "10.231.0.0/30", "10.231.0.2", vpn)


def test_nat_jail_chain():
    rules = rules_for(None)
    assert rules.chain == "aj-web"
    inbound, outbound, final = rules.chain_rules
    assert inbound == {"out-interface": "aj-web", "conntrack": {"ctstate": "RELATED,ESTABLISHED"},
                       "target": "ACCEPT"}
    assert outbound == {"in-interface": "aj-web", "src": "10.231.0.2", "out-interface": "!aj-+",
                        "target": "ACCEPT"}
    assert final == {"target": "DROP"}


def test_vpn_jail_accepts_only_the_vpn_interface_both_ways():
    inbound, outbound, _ = rules_for("wg0").chain_rules
    assert inbound["in-interface"] == "wg0"
    assert outbound["out-interface"] == "wg0"
    masquerade = [h for h in rules_for("wg0").hooks if h.chain == "POSTROUTING"]
    assert [h.rule["out-interface"] for h in masquerade] == ["wg0"]


def test_hooks_are_tagged_and_input_drops_new_connections():
    hooks = rules_for(None).hooks
    assert all(h.rule["comment"] == {"comment": "aj-web"} for h in hooks)
    assert [(h.table, h.chain) for h in hooks] == [
        ("filter", "FORWARD"), ("filter", "FORWARD"), ("filter", "INPUT"), ("filter", "INPUT"),
        ("nat", "POSTROUTING")]
    accept, drop = (h.rule for h in hooks if h.chain == "INPUT")
    assert accept["conntrack"] == {"ctstate": "RELATED,ESTABLISHED"} and accept["target"] == "ACCEPT"
    assert drop["target"] == "DROP" and "conntrack" not in drop


def test_guard_lets_jails_and_host_forwarding_through_and_drops_the_rest():
    rules = build_guard_rules(["eth1"])
    assert rules[-1] == {"target": "DROP"}
    assert {"in-interface": "eth1", "target": "RETURN"} in rules
    assert {"in-interface": "aj-+", "target": "RETURN"} in rules
    assert GUARD_CHAIN != GUARD_CHAIN.lower()  # never a jail's chain
