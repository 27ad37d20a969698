from appjail.doctor import forward_drop_chains

RULESET = """table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
	}
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
}
table inet fw {
	chain fwd {
		type filter hook forward priority filter; policy accept;
	}
}
"""


def test_forward_chains_with_a_drop_policy_are_named():
    assert forward_drop_chains(RULESET) == ["ip filter/FORWARD"]


def test_no_forward_hook_means_nothing_to_report():
    assert forward_drop_chains("") == []
    assert forward_drop_chains(RULESET.replace("policy drop", "policy accept")) == []
