"""When the host's firewall changes under running jails: their own policy, the repair, across restarts."""

from __future__ import annotations

import pytest

from appjail.helper.firewall import jailpolicy
from appjail.helper.firewall.rules import DENY, NO_LAN, RECORD
from appjail.model import JailSpec

from .samples import DNS, wg_config


def test_a_nat_jail_has_its_own_policy_before_its_door_opens_and_a_tunnel_jail_none(engine, ops, policy):
    engine.create(JailSpec("web", dns=DNS), 1000)
    door = "write_sysctl net/ipv4/conf/aj-web/forwarding 1"
    assert ops.index("policy_install aj-web") < ops.index(door)
    assert policy.installed["aj-web"][1] == {"127.0.0.1", "198.51.100.2"}
    engine.create(JailSpec("wg"), 1000, wireguard=wg_config())
    assert set(policy.installed) == {"aj-web"}


def test_the_policy_refuses_deny_and_no_lan_but_leaves_a_vpn_jails_lan_to_its_routing():
    spec = JailSpec("web", deny=("192.0.2.0/24",), no_lan=True)
    built = jailpolicy.build(spec, "aj-web", "10.128.0.2", "10.128.0.0/16")
    reasons = [rule["target"][RECORD]["reason"] for rule in built.refusals if isinstance(rule["target"], dict)]
    assert reasons == [DENY] + [NO_LAN] * len(spec.lan_ranges())
    assert [rule["dst"] for rule in built.refusals if rule["target"] == "DROP"] == ["192.0.2.0/24", *spec.lan_ranges()]
    vpn = jailpolicy.build(spec._replace(vpn="wg0"), "aj-web", "10.128.0.2", "10.128.0.0/16")
    assert [rule["dst"] for rule in vpn.refusals if rule["target"] == "DROP"] == ["192.0.2.0/24"]


def test_a_flushed_ruleset_is_put_back_once_and_counted(engine, fw):
    engine.create(JailSpec("web", dns=DNS), 1000)
    engine.create(JailSpec("vpn", vpn="up0", dns=DNS), 1000)
    assert engine.repair("nftables") is False, "nothing changed: nothing to do"
    fw.flush()
    assert engine.repair("nftables") is True
    assert set(fw.chains) == {"aj-web", "aj-vpn"} and fw.guard is not None
    for jail in engine.list():
        assert jail.repairs.count == 1 and jail.repairs.last is not None
        assert jail.repairs.what.startswith("host firewall changed (nftables): forwarding guard put back; "
                                            "rules of 2 jail(s) put back")
    assert engine.repair("nftables") is False


def test_only_the_jail_whose_rules_went_is_repaired(engine, fw, ops):
    engine.create(JailSpec("web", dns=DNS), 1000)
    engine.create(JailSpec("other", dns=DNS), 1000)
    del fw.chains["aj-web"]
    del ops[:]
    assert engine.repair("x_tables filter")
    assert ops == ["remove aj-web", "install aj-web"]
    assert engine.get("web").repairs.count == 1 and engine.get("other").repairs.count == 0


def test_another_tools_drop_reopens_and_counts_for_every_jail(engine, coexist):
    engine.create(JailSpec("web", dns=DNS), 1000)
    coexist.overridden = True
    assert engine.repair("nftables")
    assert "Docker, accepting aj-+ in DOCKER-USER again" in engine.get("web").repairs.what


def test_a_jail_whose_rules_cannot_be_put_back_is_handed_over_to_be_stopped(engine, fw):
    engine.create(JailSpec("web", dns=DNS), 1000)
    lost = []
    engine.on_lost = lambda jail_id, why: lost.append(jail_id)
    fw.flush()
    fw.fail_on.add("install")
    engine.repair("nftables")
    assert lost == [(1000, "web")]


def test_a_restarted_helper_restores_every_adopted_jails_rules_and_policy(make_engine, fw, policy):
    engine = make_engine()
    engine.create(JailSpec("web", dns=DNS), 1000)
    fw.flush()  # `nft flush ruleset` while no helper ran
    policy.installed.clear()  # a jail made by a helper without its own policy
    restarted = make_engine()
    report = restarted.reconcile()
    assert report.adopted == ["web"] and set(fw.chains) == {"aj-web"} and fw.guard is not None
    assert set(policy.installed) == {"aj-web"}
    assert restarted.get("web").repairs.count == 1


def test_a_restarted_helper_stops_and_reports_a_jail_it_cannot_restore(make_engine, fw, kernel):
    make_engine().create(JailSpec("web", dns=DNS), 1000)
    fw.flush()
    fw.fail_on.add("install")
    report = make_engine().reconcile()
    assert any(item.startswith("jail web of uid 1000 (could not be restored") for item in report.removed)
    assert "aj-web" not in kernel.namespaces


def test_the_host_addresses_reach_every_jail_only_when_they_change(engine, policy, ops):
    engine.create(JailSpec("a", dns=DNS), 1000)
    engine.create(JailSpec("b", dns=DNS), 1000)
    engine.links_changed()
    del ops[:]
    engine.links_changed()
    assert not [op for op in ops if op.startswith("policy_addresses")]
    policy.addresses.add("192.168.1.5")
    engine.links_changed()
    assert sorted(op for op in ops if op.startswith("policy_addresses")) == [
        "policy_addresses aj-a", "policy_addresses aj-b"]
    assert all("192.168.1.5" in addresses for _policy, addresses in policy.installed.values())


def test_a_failing_install_of_the_policy_undoes_the_jail(engine, policy, kernel):
    policy.fail_on.add("policy_install")
    with pytest.raises(Exception, match="policy_install failed"):
        engine.create(JailSpec("web", dns=DNS), 1000)
    assert kernel.namespaces == set() and engine.list() == []


def test_the_supervisor_stops_a_lost_jail_and_says_it_is_gone(engine, fw):
    from appjail.helper.bus.supervisor import Supervisor

    from .test_supervisor_connecting import loop_until

    removed: list = []
    supervisor = Supervisor(engine, on_added=lambda jail_id: None, on_removed=removed.append)
    engine.on_lost = supervisor.lose
    engine.create(JailSpec("web", dns=DNS), 1000)
    fw.flush()
    fw.fail_on.add("install")
    engine.repair("nftables")
    loop_until(lambda: removed)
    assert removed == [(1000, "web")] and engine.list() == []
