"""The engine's logic against in-memory stand-ins: creation, rollback, teardown, reconcile."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from appjail.helper.engine.engine import Conflict, Engine, JailError, LimitReached
from appjail.helper.engine.resources import KINDS
from appjail.helper.firewall.choice import Choice
from appjail.linkdns import LinkDNS, NoLinkDNS
from appjail.model import JailSpec

from .fakehost import FakeCoexist, FakeFirewall
from .samples import DNS, PUSHED, WG_KEY, ovpn_config, wg_config
from ..ovpnfiles import KEY_SECRET



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


def test_a_port_published_on_loopback_lets_127_8_through_the_jails_veth_alone(engine, kernel, ops):
    engine.create(JailSpec("web", dns=DNS, publish=("127.0.0.1:6003:8080",)), 1000)
    localnet = "write_sysctl net/ipv4/conf/aj-web/route_localnet 1"
    assert ops.index(localnet) == len(ops) - 2, "set with the door, right before it opens"
    engine.create(JailSpec("other", dns=DNS, publish=("6004:8080",)), 1000)
    assert "net/ipv4/conf/aj-other/route_localnet" not in kernel.sysctls


FAILING_CALLS = ["create_namespace", "create_veth", "configure_jail_side", "add_policy_rule",
                 "set_guard", "install", "coexist_open", "write_sysctl"]


@pytest.mark.parametrize("call", FAILING_CALLS)
def test_a_failure_at_any_step_undoes_the_steps_made(engine, kernel, fw, coexist, tmp_path, call):
    if call not in ("set_guard", "coexist_open"):  # done when the first jail comes
        engine.create(JailSpec("stay", dns=DNS), 1000)
    before, chains_before = kernel.state(), dict(fw.chains)
    target = {"set_guard": fw, "install": fw, "coexist_open": coexist}.get(call, kernel)
    target.fail_on.add(call)
    spec = JailSpec("web", vpn="wg0", dns=DNS)
    with pytest.raises(JailError, match="could not create jail 'web'"):
        engine.create(spec, 1000)
    target.fail_on.clear()
    assert kernel.state() == before and fw.chains == chains_before
    assert [j.name for j in engine.list()] == ([] if call in ("set_guard", "coexist_open") else ["stay"])
    assert coexist.is_open == bool(engine.list())
    assert not (tmp_path / "etc-netns/aj-web").exists()
    assert [r.spec.name for r in engine.store.load_all()[0]] == [j.name for j in engine.list()]


def test_forwarding_and_openings_stay_until_the_last_jail_goes(engine, kernel, fw, coexist):
    engine.create(JailSpec("one", dns=DNS), 1000)
    engine.create(JailSpec("two", dns=DNS), 1000)
    engine.destroy("one")
    assert kernel.sysctls["net/ipv4/conf/up0/forwarding"] == "1" and fw.guard is not None
    assert coexist.is_open
    engine.destroy("two")
    assert kernel.sysctls["net/ipv4/conf/up0/forwarding"] == "0" and fw.guard is None
    assert not coexist.is_open


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
    crashed.store.delete("aj-lost")  # the helper died before it could write it down... or after
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


def test_a_user_at_the_limit_gets_no_new_jail_and_nothing_is_made(make_engine, kernel, fw, ops, tmp_path):
    engine = make_engine(max_jails_per_user=2)
    engine.create(JailSpec("one", dns=DNS), 1000)
    engine.create(JailSpec("two", dns=DNS), 1000)
    before, made = kernel.state(), list(ops)
    with pytest.raises(LimitReached, match=r"^jail 'three' would be one more than the 2 jails one user may "
                                           r"have \(appjail-helper --max-jails-per-user\): stop one of yours first$"):
        engine.create(JailSpec("three", dns=DNS), 1000)
    assert ops == made and kernel.state() == before and set(fw.chains) == {"aj-one", "aj-two"}
    assert sorted(r.spec.name for r in engine.store.load_all()[0]) == ["one", "two"]
    assert not (tmp_path / "etc-netns/aj-three").exists()
    engine.create(JailSpec("theirs", dns=DNS), 1001)  # the limit is per user
    engine.create(JailSpec("three", dns=DNS), 1000, unlimited=True)  # root, or allowed to manage
    engine.destroy("one")
    assert engine.at_limit(1000) and not engine.at_limit(1001), "two are left: still at the limit"
    engine.destroy("three")
    engine.create(JailSpec("again", dns=DNS), 1000)


def test_root_and_managers_are_not_limited():
    from appjail.helper.bus.policy import Caller, unlimited
    assert unlimited(Caller(0, 0, ()))
    assert unlimited(Caller(1000, 1000, (), may_manage=True))
    assert not unlimited(Caller(1000, 1000, ()))


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_a_limit_below_one_stops_the_helper_at_start(limit, capsys):
    from appjail.helper.main import main
    assert main(["--max-jails-per-user", limit]) == 2
    assert capsys.readouterr().err == f"appjail-helper: --max-jails-per-user must be at least 1, not {limit}\n"


def test_every_resource_says_how_it_is_made_undone_and_swept():
    for step in (step for steps in KINDS.values() for step in steps):
        assert all(callable(getattr(step, method)) for method in ("make", "undo", "sweep")), step


def test_published_ports_are_held_from_before_the_namespace_until_the_rules_are_gone(engine, ports, ops):
    engine.create(JailSpec("web", dns=DNS, publish=("6000:8080", "6001:53/udp")), 1000)
    assert ports.held == {("tcp", 6000), ("udp", 6001)}
    assert ops.index("hold 6000/tcp") < ops.index("create_namespace aj-web")
    del ops[:]
    engine.destroy("web")
    assert ports.held == set()
    assert ops.index("remove aj-web") < ops.index("release 6000/tcp"), "no DNAT left when the port goes"


def test_a_port_the_host_has_is_a_conflict_and_nothing_is_made(engine, kernel, ports, tmp_path):
    before = kernel.state()
    with pytest.raises(Conflict, match="port 22/tcp is already in use on the host"):
        engine.create(JailSpec("ssh", dns=DNS, publish=("6000:80", "22:22")), 1000)
    assert kernel.state() == before and ports.held == set() and engine.list() == []
    assert engine.store.load_all() == ([], [])


def test_an_adopted_jail_holds_its_ports_again(make_engine, ports):
    make_engine().create(JailSpec("web", dns=DNS, publish=("6000:8080",)), 1000)
    ports.held.clear()  # the helper died: its sockets went with it
    restarted = make_engine()
    assert restarted.reconcile().adopted == ["web"]
    assert ports.held == {("tcp", 6000)}
    restarted.reconcile()  # a second reconcile holds nothing twice
    restarted.destroy("web")
    assert ports.held == set()


def test_an_adopted_jail_keeps_the_ports_it_can_hold_and_names_the_one_taken_meanwhile(make_engine, ports):
    make_engine().create(JailSpec("web", dns=DNS, publish=("6000:8080", "6001:8081")), 1000)
    ports.held.clear()  # the helper died: its sockets went with it
    ports.host_sockets.add(("tcp", 6001))  # and a program of the host bound one of its ports
    restarted = make_engine()
    assert restarted.reconcile().adopted == ["web"]
    assert ports.held == {("tcp", 6000)}
    assert [str(entry) for entry in restarted.get("web").ports_not_held] == ["6001:8081/tcp"]
    restarted.destroy("web")
    assert ports.held == set()


def test_a_crashed_helpers_jail_gives_its_address_back_like_a_teardown(make_engine, kernel, conntrack):
    crashed = make_engine()
    lost = crashed.create(JailSpec("lost", dns=DNS), 1000)
    address = lost.addressing.jail_address
    conntrack.addresses.add(address)
    del kernel.links["aj-lost"]  # its veth went: the jail is not adopted
    restarted = make_engine()
    report = restarted.reconcile()
    assert report.adopted == [] and f"connections of {address}" in report.removed
    assert conntrack.addresses == set(), "no later jail on the address inherits its connections"
    assert restarted.create(JailSpec("next", dns=DNS), 1001).addressing.jail_address != address, \
        "and the address is held back, as after a teardown"


def test_teardown_forgets_the_jails_connections_and_holds_its_address_back(engine, conntrack, ops):
    first = engine.create(JailSpec("one", dns=DNS), 1000)
    address = first.addressing.jail_address
    conntrack.addresses.add(address)
    del ops[:]
    engine.destroy("one")
    assert conntrack.addresses == set()
    assert ops.index("retire_link aj-one") < ops.index("remove aj-one") < ops.index(
        f"forget_connections {address}"), "forgotten once nothing can open a connection of the jail"
    second = engine.create(JailSpec("two", dns=DNS), 1001)
    assert second.addressing.jail_address != address, "the freed /30 is held back"


# -- tunnel jails ------------------------------------------------------------

def test_a_tunnel_jail_is_namespace_tunnel_resolver_and_nothing_on_the_host(engine, kernel, fw, tunnels,
                                                                            ops, tmp_path):
    before = kernel.state()
    jail = engine.create(JailSpec("wg"), 1000, wireguard=wg_config())
    assert ops == ["create_namespace aj-wg", "create_tunnel aj-wg", "configure_tunnel aj-wg",
                   "move_tunnel aj-wg aj-wg", "configure_tunnel_inside aj-wg aj-wg", "wait_tunnel aj-wg"]
    assert tunnels.state() == {"devices": {"aj-wg": "aj-wg"}, "daemons": {"aj-wg"}}
    assert tunnels.inside["aj-wg"] == (("10.66.0.2/32",), ("0.0.0.0/0",), 1420, False)
    assert fw.chains == {} and fw.guard is None and kernel.links == before["links"], "no veth, rule, forwarding"
    assert "nameserver 10.66.0.1\n" in (tmp_path / "etc-netns/aj-wg/resolv.conf").read_text()
    assert jail.address == "10.66.0.2" and jail.secret is None
    record = (tmp_path / "run/jails/wg.json").read_text()
    assert WG_KEY not in record and '"wireguard-go"' in record and '"ready"' in record
    assert WG_KEY in tunnels.configured["aj-wg"], "the key went only down the pipe"

    engine.destroy("wg")
    assert kernel.state() == before and tunnels.state() == {"devices": {}, "daemons": set()}
    assert engine.store.load_all() == ([], [])


def test_dns_flag_wins_over_the_files_dns(engine, tmp_path):
    engine.create(JailSpec("wg", dns=("192.0.2.53",)), 1000, wireguard=wg_config())
    assert (tmp_path / "etc-netns/aj-wg/resolv.conf").read_text().count("nameserver") == 1
    assert "nameserver 192.0.2.53\n" in (tmp_path / "etc-netns/aj-wg/resolv.conf").read_text()
    engine.destroy("wg")


@pytest.mark.parametrize("call", ["create_namespace", "create_tunnel", "configure_tunnel", "move_tunnel",
                                  "configure_tunnel_inside", "wait_tunnel"])
def test_a_tunnel_jail_that_fails_anywhere_leaves_nothing(engine, kernel, tunnels, tmp_path, call):
    before = kernel.state()
    (tunnels if "tunnel" in call else kernel).fail_on.add(call)
    with pytest.raises(JailError, match="could not create jail 'wg'"):
        engine.create(JailSpec("wg"), 1000, wireguard=wg_config())
    assert kernel.state() == before and tunnels.state() == {"devices": {}, "daemons": set()}
    assert engine.list() == [] and engine.store.load_all() == ([], [])
    assert not (tmp_path / "etc-netns/aj-wg").exists()


def test_a_tunnel_jail_refuses_options_of_the_host_path(engine):
    from appjail.model import ValidationError
    for spec in (JailSpec("wg", vpn="wg0"), JailSpec("wg", deny=("192.0.2.0/24",)), JailSpec("wg", no_lan=True),
                 JailSpec("wg", publish=("6000:80",))):
        with pytest.raises(ValidationError, match="cannot be combined with --wireguard"):
            engine.create(spec, 1000, wireguard=wg_config())


def test_an_endpoint_that_does_not_resolve_creates_nothing(engine, kernel, ops):
    from appjail.model import ValidationError
    config = wg_config()
    named = config._replace(peers=(config.peers[0]._replace(
        endpoint=config.peers[0].endpoint._replace(host="vpn.invalid")),))
    with pytest.raises(ValidationError, match="^WireGuard file, line 7: Endpoint vpn.invalid does not resolve$"):
        engine.create(JailSpec("wg"), 1000, wireguard=named)
    assert ops == [] and engine.store.load_all() == ([], [])


def test_nat_forwarding_goes_with_the_last_nat_jail_even_while_a_tunnel_jail_stays(engine, kernel, fw):
    engine.create(JailSpec("wg"), 1000, wireguard=wg_config())
    engine.create(JailSpec("nat", dns=DNS), 1000)
    engine.destroy("nat")
    assert kernel.sysctls["net/ipv4/conf/up0/forwarding"] == "0" and fw.guard is None
    engine.destroy("wg")


def test_reconcile_adopts_a_tunnel_jail_and_removes_a_crashed_ones_daemon(make_engine, kernel, tunnels):
    crashed = make_engine()
    crashed.create(JailSpec("kept"), 1000, wireguard=wg_config())
    crashed.create(JailSpec("lost"), 1000, wireguard=wg_config())
    crashed.store.delete("aj-lost")
    tunnels.daemons.add("aj-half")  # died between wireguard-go's start and the move
    tunnels.devices["aj-half"] = "host"

    restarted = make_engine()
    report = restarted.reconcile()
    assert report.adopted == ["kept"]
    assert {"wireguard aj-lost", "wireguard aj-half", "namespace aj-lost"} <= set(report.removed)
    assert tunnels.state() == {"devices": {"aj-kept": "aj-kept"}, "daemons": {"aj-kept"}}
    assert kernel.namespaces == {"aj-kept"}
    assert restarted.get("kept").tunnel["endpoint"] == "198.51.100.1:51820"
    restarted.destroy("kept")
    assert restarted.reconcile().removed == []


def test_reconcile_leaves_another_helpers_tunnel_jail_alone(make_engine, drivers, kernel, tunnels, tmp_path):
    other = Engine(run_dir=tmp_path / "other-run", etc_netns=tmp_path / "etc-netns",
                   firewall_choice=Choice("fake", "unit test"), drivers=drivers, firewall_backend=FakeFirewall([]),
                   coexist=FakeCoexist([]))
    other.create(JailSpec("theirs"), 1000, wireguard=wg_config())
    tunnels.daemons.discard("aj-theirs")  # its daemon lives in the other helper's namespace
    report = make_engine().reconcile()
    assert "aj-theirs" in kernel.namespaces and report.removed == []
    tunnels.daemons.add("aj-theirs")
    other.destroy("theirs")


OVPN_KEY = KEY_SECRET


def test_an_openvpn_jail_is_made_connecting_and_is_complete_once_its_tunnel_is_up(engine, openvpn, tunnels,
                                                                                   ops, tmp_path):
    changed = []
    engine.on_tunnel_change = changed.append
    jail = engine.create(JailSpec("ov"), 1000, openvpn=ovpn_config())
    assert ops == ["create_namespace aj-ov", "start_openvpn aj-ov"], "nothing waits for the tunnel"
    assert jail.connecting and not engine.connected(jail) and changed == []
    assert engine.tunnel_status(jail)["state"] == "connecting" and jail.address == "-"
    record = (tmp_path / "run/jails/ov.json").read_text()
    assert '"creating"' in record, "a helper dying now leaves a jail to sweep, not to adopt"
    assert OVPN_KEY not in record and OVPN_KEY in openvpn.config["aj-ov"] and jail.secret is None

    openvpn.up("aj-ov", PUSHED)
    assert changed == [jail.id] and tunnels.devices["aj-ov"] == "aj-ov"
    assert tunnels.inside["aj-ov"] == (("203.0.113.130/26",), ("0.0.0.0/0",), 1500, False)
    assert engine.connected(jail) and not jail.connecting and engine.tunnel_status(jail)["state"] == "down"
    assert '"ready"' in (tmp_path / "run/jails/ov.json").read_text() and jail.address == "203.0.113.130"
    assert "nameserver 192.0.2.53\n" in (tmp_path / "etc-netns/aj-ov/resolv.conf").read_text()
    engine.destroy("ov")
    assert openvpn.daemons == {} and engine.store.load_all() == ([], [])


def test_an_openvpn_jail_whose_daemon_ends_or_is_overdue_fails_with_its_last_words(engine, openvpn):
    jail = engine.create(JailSpec("ov"), 1000, openvpn=ovpn_config())
    with pytest.raises(JailError, match=r"^could not create jail 'ov': openvpn's tunnel was not up within 20 s: "
                                        r"no output$"):
        engine.connected(jail, overdue=True)
    openvpn.end("aj-ov", "AUTH: Received control message: AUTH_FAILED")
    with pytest.raises(JailError, match=r"^could not create jail 'ov': openvpn ended before its tunnel was up: "
                                        r"AUTH: Received control message: AUTH_FAILED$"):
        engine.connected(jail)


def test_reconcile_sweeps_an_openvpn_jail_that_was_still_connecting(make_engine, openvpn, kernel):
    make_engine().create(JailSpec("ov"), 1000, openvpn=ovpn_config())
    openvpn.helper_died()
    report = make_engine().reconcile()
    assert report.adopted == [] and {"openvpn aj-ov", "namespace aj-ov"} <= set(report.removed)
    assert openvpn.daemons == {} and openvpn.running == set() and kernel.namespaces == set()


def test_reconcile_adopts_an_openvpn_jail_and_serves_its_daemon_again(make_engine, openvpn, tunnels, tmp_path):
    crashed = make_engine()
    for name in ("kept", "nodaemon", "norecord"):
        jail = crashed.create(JailSpec(name), 1000, openvpn=ovpn_config())
        openvpn.up(jail.tunnel_ifname, PUSHED)
        assert crashed.connected(jail)
    openvpn.helper_died()
    openvpn.running.discard("aj-nodaemon")  # ended while no helper ran
    crashed.store.delete("aj-norecord")

    restarted = make_engine()
    changed = []
    restarted.on_tunnel_change = changed.append
    report = restarted.reconcile()
    assert report.adopted == ["kept"] and not restarted.get("kept").connecting
    assert {"openvpn aj-norecord", "namespace aj-nodaemon", "namespace aj-norecord"} <= set(report.removed)
    assert set(openvpn.daemons) == {"aj-kept"} and openvpn.running == set()
    assert restarted.get("kept").address == "203.0.113.130", "its pushed address, from the record"
    openvpn.up("aj-kept", {**PUSHED, "ifconfig_local": "203.0.113.131"})  # a reconnection, served again
    assert tunnels.inside["aj-kept"][0] == ("203.0.113.131/26",) and changed == [(1000, "kept")]
    restarted.destroy("kept")
    assert openvpn.daemons == {} and restarted.reconcile().removed == []


def test_a_vpn_jail_without_dns_asks_the_servers_the_system_has_for_its_interface(make_engine, tmp_path):
    """Not the host's own (a router the VPN cannot reach): linkdns.py."""
    engine = make_engine(link_dns=lambda ifname: LinkDNS(("10.64.0.1",), f"resolvconf (tun.{ifname})"),
                         upstream_sources=(tmp_path / "host-resolv.conf",))
    (tmp_path / "host-resolv.conf").write_text("nameserver 192.168.1.1\n")
    assert engine.create(JailSpec("vpn", vpn="wg0"), 1000).dns == ("10.64.0.1",)
    assert "nameserver 10.64.0.1\n" in (tmp_path / "etc-netns/aj-vpn/resolv.conf").read_text()
    assert engine.create(JailSpec("nat"), 1000).dns == ("192.168.1.1",)  # a NAT jail reaches the host's


def test_a_vpn_jail_without_any_dns_is_refused_saying_how(make_engine, kernel, tmp_path):
    def none(ifname):
        raise NoLinkDNS(f"the system has no DNS server for {ifname}: give one with --dns ADDR")
    engine = make_engine(link_dns=none, upstream_sources=(tmp_path / "host-resolv.conf",))
    (tmp_path / "host-resolv.conf").write_text("nameserver 192.168.1.1\n")
    before = kernel.state()
    with pytest.raises(JailError, match="jail 'vpn': the system has no DNS server for wg0: .*--dns ADDR"):
        engine.create(JailSpec("vpn", vpn="wg0"), 1000)
    assert kernel.state() == before and engine.list() == []


class FakeForwards:
    """portforward.Forwards: which jails' forwarders run; the files a sweep finds."""

    def __init__(self, files=()) -> None:
        self.running: set[str] = set()
        self.files = set(files)

    def start(self, jail, on_port):
        self.running.add(jail.netns)
        self.on_port = on_port
        return SimpleNamespace(stop=lambda: self.running.discard(jail.netns))

    def recorded(self, jail):
        return 50000 if jail.netns in self.files else None

    def sweep(self, live_netns):
        gone = sorted(self.files - set(live_netns))
        self.files -= set(gone)
        return gone


def test_a_forwarded_port_is_asked_for_tunnel_jails_only_while_they_live(make_engine):
    from appjail.model import ValidationError
    forwards = FakeForwards()
    engine = make_engine(forwards=forwards)
    with pytest.raises(ValidationError, match=r"^--forward-port needs a VPN \(--vpn, --wireguard or --openvpn\)"):
        engine.create(JailSpec("nat", dns=DNS, forward_port="natpmp"), 1000)
    engine.create(JailSpec("wg", forward_port="natpmp"), 1000, wireguard=wg_config())
    engine.create(JailSpec("plain"), 1000, wireguard=wg_config())
    assert forwards.running == {"aj-wg"}
    engine.destroy("wg")
    assert forwards.running == set()


def test_reconcile_asks_again_for_an_adopted_jails_port_and_sweeps_stale_files(make_engine):
    make_engine(forwards=FakeForwards()).create(JailSpec("wg", forward_port="natpmp"), 1000,
                                                       wireguard=wg_config())
    forwards = FakeForwards(files={"aj-wg", "aj-gone"})
    restarted = make_engine(forwards=forwards)
    report = restarted.reconcile()
    assert forwards.running == {"aj-wg"} and forwards.files == {"aj-wg"}
    assert "forwarded port file aj-gone" in report.removed
    restarted.destroy("wg")


def test_a_vpn_jails_forwarded_port_comes_in_from_its_vpn_alone(make_engine, fw):
    forwards = FakeForwards()
    engine = make_engine(forwards=forwards)
    jail = engine.create(JailSpec("vpn", vpn="wg0", dns=DNS, forward_port="natpmp"), 1000)
    assert forwards.running == {"aj-vpn"} and jail.firewall_rules.forwarded_port is None
    forwards.on_port(50000)  # from the forwarder's thread, before the port is told
    dnat = [h.rule for h in fw.chains["aj-vpn"].hooks if h.chain == "PREROUTING"]
    assert [(r["in-interface"], r["protocol"], r["target"]) for r in dnat] == [
        ("wg0", proto, {"DNAT": {"to-destination": f"{jail.addressing.jail_address}:50000"}})
        for proto in ("tcp", "udp")]
    forwards.on_port(None)  # lost
    assert fw.chains["aj-vpn"].forwarded_port is None
    engine.destroy("vpn")
    forwards.on_port(50001)  # a late answer changes nothing of a jail that is gone
    assert fw.chains == {}


def test_a_restarted_helper_keeps_a_vpn_jails_forwarded_port_open_while_it_asks_again(make_engine, fw):
    make_engine(forwards=FakeForwards()).create(JailSpec("vpn", vpn="wg0", dns=DNS, forward_port="natpmp"),
                                                       1000)
    restarted = make_engine(forwards=FakeForwards(files={"aj-vpn"}))  # the port file says 50000
    restarted.reconcile()
    assert fw.chains["aj-vpn"].forwarded_port == restarted.get("vpn").firewall_rules.forwarded_port == 50000
    restarted.destroy("vpn")
