"""The engine's logic against in-memory stand-ins: creation, rollback, teardown, reconcile."""

from __future__ import annotations

import pytest

from appjail.helper.firewall import Choice
from appjail.helper.jails import Engine, JailError
from appjail.helper.resources import RESOURCES
from appjail.model import JailSpec

from .fakehost import FakeFirewall, FakeKernel

DNS = ("192.0.2.53",)


@pytest.fixture
def ops() -> list[str]:
    return []


@pytest.fixture
def kernel(ops) -> FakeKernel:
    return FakeKernel(ops)


@pytest.fixture
def fw(ops) -> FakeFirewall:
    return FakeFirewall(ops)


@pytest.fixture
def make_engine(tmp_path, kernel, fw):
    """An engine over the fakes; a second one on the same state is a restarted helper."""
    def make() -> Engine:
        return Engine(run_dir=tmp_path / "run", etc_netns=tmp_path / "etc-netns",
                      firewall_choice=Choice("fake", "unit test"), system=kernel, firewall_backend=fw)
    return make


@pytest.fixture
def engine(make_engine) -> Engine:
    return make_engine()


def test_a_jail_is_made_of_every_resource_and_leaves_nothing(engine, kernel, fw, tmp_path):
    before = kernel.state()
    jail = engine.create(JailSpec("web", vpn="up0", dns=DNS), 1000)
    assert kernel.namespaces == {"aj-web"} and kernel.links["aj-web"] == "aj-web"
    assert kernel.jail_sides == {"aj-web"}
    assert kernel.rules == {("aj-web", jail.addressing.table, 10231)}
    assert set(fw.chains) == {"aj-web"} and fw.guard is not None
    assert kernel.sysctls["net/ipv4/conf/aj-web/forwarding"] == "1"
    assert "nameserver 192.0.2.53\n" in (tmp_path / "etc-netns/aj-web/resolv.conf").read_text()
    assert engine.store.load_all()[0][0].status == "ready"

    engine.destroy("web")
    assert kernel.state() == before
    assert fw.chains == {} and fw.guard is None
    assert kernel.sysctls["net/ipv4/conf/up0/forwarding"] == "0", "forwarding put back"
    assert not (tmp_path / "etc-netns/aj-web").exists()
    assert engine.store.load_all() == ([], [])


def test_the_door_opens_last_and_shuts_first(engine, ops):
    engine.create(JailSpec("web", dns=DNS), 1000)
    door = "write_sysctl net/ipv4/conf/aj-web/forwarding 1"
    assert ops[-1] == door and ops.index("install aj-web") < ops.index(door)
    del ops[:]
    engine.destroy("web")
    assert ops[0] == "retire_link aj-web", "the jail is cut off before anything else goes"


FAILING_CALLS = ["create_namespace", "create_veth", "configure_jail_side", "add_policy_rule",
                 "set_guard", "install", "write_sysctl"]


@pytest.mark.parametrize("call", FAILING_CALLS)
def test_a_failure_at_any_step_undoes_the_steps_made(engine, kernel, fw, tmp_path, call):
    if call != "set_guard":  # the guard is set when the first jail switches on forwarding
        engine.create(JailSpec("stay", dns=DNS), 1000)
    before, chains_before = kernel.state(), dict(fw.chains)
    target = fw if call in ("set_guard", "install") else kernel
    target.fail_on.add(call)
    spec = JailSpec("web", vpn="wg0", dns=DNS)
    with pytest.raises(JailError, match="could not create jail 'web'"):
        engine.create(spec, 1000)
    target.fail_on.clear()
    assert kernel.state() == before and fw.chains == chains_before
    assert [j.name for j in engine.list()] == ([] if call == "set_guard" else ["stay"])
    assert not (tmp_path / "etc-netns/aj-web").exists()
    assert [r.spec.name for r in engine.store.load_all()[0]] == [j.name for j in engine.list()]


def test_forwarding_stays_until_the_last_jail_goes(engine, kernel, fw):
    engine.create(JailSpec("one", dns=DNS), 1000)
    engine.create(JailSpec("two", dns=DNS), 1000)
    engine.destroy("one")
    assert kernel.sysctls["net/ipv4/conf/up0/forwarding"] == "1" and fw.guard is not None
    engine.destroy("two")
    assert kernel.sysctls["net/ipv4/conf/up0/forwarding"] == "0" and fw.guard is None


def test_a_failing_undo_does_not_stop_the_others(engine, kernel, fw):
    engine.create(JailSpec("web", dns=DNS), 1000)
    fw.fail_on.add("remove")
    with pytest.raises(JailError, match="was not removed completely"):
        engine.destroy("web")
    assert kernel.namespaces == set() and "aj-web" not in kernel.links
    assert set(fw.chains) == {"aj-web"}, "what failed is left for reconcile"
    fw.fail_on.clear()
    report = engine.reconcile()
    assert "netfilter (fake) aj-web" in report.removed and fw.chains == {}


def test_reconcile_adopts_ready_jails_and_sweeps_every_resource(make_engine, kernel, fw, tmp_path):
    crashed = make_engine()
    crashed.create(JailSpec("kept", dns=DNS), 1000)
    crashed.create(JailSpec("lost", vpn="wg0", dns=DNS), 1000)
    crashed.store.delete("lost")  # the helper died before it could write it down... or after
    kernel.links["aj-stale"] = "aj-stale"
    (tmp_path / "etc-netns/aj-gone").mkdir(parents=True)

    restarted = make_engine()
    report = restarted.reconcile()
    assert report.adopted == ["kept"]
    assert {"namespace aj-lost", "link aj-stale", "netfilter (fake) aj-lost",
            "resolver files aj-gone", "resolver files aj-lost"} <= set(report.removed)
    assert any(note.startswith("policy rule aj-lost") for note in report.removed)
    assert kernel.namespaces == {"aj-kept"} and set(kernel.links) == {"lo", "up0", "aj-kept"}
    assert kernel.rules == set() and kernel.tables == {}
    assert set(fw.chains) == {"aj-kept"} and fw.guard is not None
    restarted.destroy("kept")
    assert restarted.reconcile().removed == []


def test_every_resource_says_how_it_is_made_undone_and_swept():
    for step in RESOURCES:
        assert all(callable(getattr(step, method)) for method in ("make", "undo", "sweep")), step
