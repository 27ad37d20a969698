"""Jail names per owner: kernel names, addresses, and who reaches which jail."""

from __future__ import annotations

import pytest

from appjail.helper.bus import policy
from appjail.helper.bus.policy import Caller, NotAllowed
from appjail.helper.engine.engine import JailError, JailNotFound
from appjail.helper.bus.supervisor import Supervisor
from appjail.model import JailSpec, ValidationError, parse_jail_address

from .samples import DNS, wg_config

A, B = 1000, 1001


def test_two_owners_each_have_a_jail_of_one_name_with_kernel_names_of_their_own(engine, kernel, fw, tmp_path):
    first = engine.create(JailSpec("firefox-esr1", vpn="up0", dns=DNS), A)
    second = engine.create(JailSpec("firefox-esr1", vpn="up0", dns=DNS), B)
    assert first.netns == "aj-firefox-esr1", "the name when it is free: as before"
    assert second.netns.startswith("aj-firefox-") and len(second.netns) == 15
    assert int(second.netns[-4:], 16) >= 0 and second.netns != first.netns
    assert kernel.namespaces == {first.netns, second.netns}
    assert {first.netns, second.netns} <= set(kernel.links) and set(fw.chains) == {first.netns, second.netns}
    assert {iif for iif, _table, _prio in kernel.rules} == {first.netns, second.netns}
    assert (tmp_path / f"etc-netns/{second.netns}/resolv.conf").exists()
    assert {r.kernel_name for r in engine.store.load_all()[0]} == {first.netns, second.netns}
    with pytest.raises(JailError, match="more than one user has a jail named 'firefox-esr1': say whose"):
        engine.get("firefox-esr1")

    engine.destroy("firefox-esr1", A)
    assert kernel.namespaces == {second.netns} and set(fw.chains) == {second.netns}
    assert engine.get("firefox-esr1", B) is second and engine.find("firefox-esr1", A) is None
    assert engine.create(JailSpec("firefox-esr1", dns=DNS), A).netns == "aj-firefox-esr1", "free again"


def test_a_restarted_engine_adopts_the_recorded_kernel_names(make_engine, kernel, fw, tunnels):
    crashed = make_engine()
    crashed.create(JailSpec("web", dns=DNS), A)
    theirs = crashed.create(JailSpec("web", dns=DNS), B)
    tunnel = crashed.create(JailSpec("wg"), A, wireguard=wg_config())
    other_tunnel = crashed.create(JailSpec("wg"), B, wireguard=wg_config())
    restarted = make_engine()
    report = restarted.reconcile()
    assert sorted(report.adopted) == ["web", "web", "wg", "wg"] and report.removed == []
    assert restarted.get("web", B).netns == theirs.netns and restarted.get("wg", B).netns == other_tunnel.netns
    assert restarted.get("wg", A).netns == tunnel.netns == "aj-wg"
    assert kernel.namespaces == {"aj-web", theirs.netns, "aj-wg", other_tunnel.netns}
    assert set(fw.chains) == {"aj-web", theirs.netns}
    for name, owner in (("web", A), ("web", B), ("wg", A), ("wg", B)):
        restarted.destroy(name, owner)
    assert kernel.namespaces == set() and fw.chains == {} and restarted.reconcile().removed == []


def test_a_namespace_another_helper_holds_is_not_taken(engine, kernel):
    kernel.namespaces.add("aj-web")  # a lab's, or a demo's helper's
    jail = engine.create(JailSpec("web", dns=DNS), A)
    assert jail.netns.startswith("aj-web-") and len(jail.netns) == 11
    engine.destroy("web")
    assert kernel.namespaces == {"aj-web"}


@pytest.mark.parametrize("address,parsed", [
    ("web", (None, "web")),
    ("ajt-a/web", ("ajt-a", "web")),
    ("_svc/web", ("_svc", "web")),
    ("1000/web", (1000, "web")),
    ("0/web", (0, "web")),
])
def test_an_address_is_a_name_or_an_owner_and_a_name(address, parsed):
    assert parse_jail_address(address) == parsed


@pytest.mark.parametrize("address,message", [
    ("/web", "invalid owner ''"),
    ("Bob/web", "invalid owner 'Bob'"),
    ("a/b/web", "invalid owner 'a/b'"),
    ("4294967295/web", "invalid owner '4294967295'"),
    ("../web", "invalid owner '..'"),
    ("ajt-a/", "invalid jail name ''"),
    ("ajt-a/Web", "invalid jail name 'Web'"),
    (7, "invalid jail 7"),
])
def test_a_bad_address_is_refused_in_one_sentence(address, message):
    with pytest.raises(ValidationError, match="^" + message.replace("(", r"\(")) as caught:
        parse_jail_address(address)
    assert "\n" not in str(caught.value)


def test_a_caller_reaches_its_own_jail_by_name_and_anothers_only_with_manage(engine):
    supervisor = Supervisor(engine, on_added=lambda name: None, on_removed=lambda name: None)
    mine, theirs = engine.create(JailSpec("web", dns=DNS), A), engine.create(JailSpec("web", dns=DNS), B)
    caller = Caller(A, A, ())
    assert supervisor.jail_of(caller, "web") is mine
    assert supervisor.jail_of(caller, f"{A}/web") is mine
    for address in (f"{B}/web", f"{B}/nothing"):  # refused whether it exists or not
        with pytest.raises(NotAllowed, match=f"^jail '{address}' belongs to another user$"):
            supervisor.jail_of(caller, address)
    manager = Caller(A, A, (), may_manage=True)
    assert supervisor.jail_of(manager, f"{B}/web") is theirs
    assert supervisor.jail_of(manager, "web") is mine, "a bare name is still the caller's own"
    with pytest.raises(JailNotFound, match=f"^no jail named '{B}/nothing'$"):
        supervisor.jail_of(manager, f"{B}/nothing")
    with pytest.raises(JailNotFound, match="^no user named 'no-such-user-here'$"):
        supervisor.jail_of(manager, "no-such-user-here/web")
    assert policy.resolve(caller, "root/web") == (0, "web")
    described = supervisor.describe([mine, theirs])
    assert [(d["name"], d["owner_uid"], d["netns"]) for d in described] == [
        ("web", A, "aj-web"), ("web", B, theirs.netns)]
    assert supervisor.visible_jails(caller) == [mine]


def test_a_caller_in_a_network_namespace_neither_the_hosts_nor_a_jails_is_refused(engine, kernel):
    supervisor = Supervisor(engine, on_added=lambda name: None, on_removed=lambda name: None)
    host = kernel.namespace_id("/proc/self/ns/net")
    assert supervisor.confine(Caller(A, A, (), netns=host)).inside is None
    elsewhere = (host[0], host[1] + 1)  # a service's PrivateNetwork=, a sandbox's --unshare-net
    with pytest.raises(NotAllowed, match="^appjail does not answer programs in another network namespace "
                                         r"than the host's \(.*they were kept from$"):
        supervisor.confine(Caller(A, A, (), netns=elsewhere))
    with pytest.raises(NotAllowed, match="made themselves"):
        supervisor.confine(Caller(A, A, (), netns=host, netns_ours=False))
