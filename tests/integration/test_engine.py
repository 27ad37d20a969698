"""The jail engine against the lab: NAT, VPN, kill switch, DNS, IPv6, INPUT, scale, crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appjail.helper.engine.engine import Engine, JailError
from appjail.helper.engine.state import JailRecord, StateStore
from appjail.helper.firewall import nft, rules, xt
from appjail.helper.kernel import netns
from appjail.lab import in_netns
from appjail.model import JailSpec, Publish, ValidationError

from .conftest import jail_run, residue_in_host, residue_machine_wide

LAB_DNS = ("192.0.2.53",)


def fetch(name: str, url: str = "http://192.0.2.80/", timeout: float = 5) -> subprocess.CompletedProcess:
    return jail_run(name, "curl", "-sS", "--max-time", str(timeout), url, timeout=timeout + 5)


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_nat_jail_reaches_the_server_through_nat(engine, lab):
    jail = engine.create(JailSpec("nat1", dns=LAB_DNS), 1000)
    assert jail.addressing.jail_address.startswith("10.231.")
    result = fetch("nat1")
    assert result.stdout == f"client={lab.HOST_UPLINK_ADDR}\n", result.stderr


def test_vpn_jail_reaches_the_server_through_the_tunnel(engine, lab):
    engine.create(JailSpec("vpn1", vpn=lab.wg_ifname, dns=LAB_DNS), 1000)
    result = fetch("vpn1")
    assert result.stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n", result.stderr


def test_vpn_jail_with_missing_interface_is_closed_until_it_appears(engine, lab):
    engine.create(JailSpec("vpn2", vpn="wgnone0", dns=LAB_DNS), 1000)
    result = fetch("vpn2", timeout=2)
    assert result.returncode != 0 and "client=" not in result.stdout


def test_kill_switch_holds_while_the_tunnel_goes_down_away_and_back(engine, lab):
    engine.create(JailSpec("kill1", vpn=lab.wg_ifname, dns=LAB_DNS), 1000)
    # everything on the host's uplink except the tunnel's own UDP packets
    capture = lab.capture(lab.host_uplink_if, lab.host_ns, "ip and not udp port 51820")
    sender = subprocess.Popen(
        ["ip", "netns", "exec", "aj-kill1", sys.executable, "-c",
         "import socket,time\n"
         "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         "while True:\n"
         "    try: s.sendto(b'x',('192.0.2.80',9))\n"
         "    except OSError: pass\n"
         "    time.sleep(0.01)\n"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert fetch("kill1").stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n"
        lab.wg_down()
        assert fetch("kill1", timeout=1).returncode != 0
        lab.wg_delete()
        assert fetch("kill1", timeout=1).returncode != 0
        time.sleep(0.5)
        lab.wg_create()
        assert wait_until(lambda: fetch("kill1", timeout=1).stdout
                          == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n", timeout=15)
    finally:
        sender.kill()
        sender.wait()
        packets = capture.stop()
    assert packets == [], f"jail traffic left outside the tunnel: {packets[:5]}"


def test_names_resolve_through_the_jail_dns_only(engine, lab):
    trap = lab.start_dns_trap(["127.0.0.53", "0.0.0.0"])
    try:
        engine.create(JailSpec("dns1", dns=LAB_DNS), 1000)
        result = jail_run("dns1", "getent", "hosts", "www.lab.test")
        assert result.stdout.split()[:1] == [lab.SERVER_ADDR], result
        assert any(q["name"].rstrip(".") == "www.lab.test" for q in lab.dns_log())
        # a resolver on the host is not reachable, even when asked for by address
        for server in ("127.0.0.53", lab.HOST_UPLINK_ADDR, engine.get("dns1").addressing.host_address):
            asked = jail_run("dns1", "dig", "+short", "+tries=1", "+time=1", f"@{server}", "x.lab.test")
            assert lab.SERVER_ADDR not in asked.stdout
        assert trap.log() == []
    finally:
        trap.stop()


def test_no_ipv6_leaves_a_jail(engine, lab):
    engine.create(JailSpec("six1", dns=LAB_DNS), 1000)
    assert lab.run_in(lab.host_ns, ["curl", "-sS", "--max-time", "3", f"http://[{lab.SERVER6_ADDR}]/"]
                      ).returncode == 0, "control: the lab host does reach the server over IPv6"
    capture = lab.capture(lab.host_uplink_if, lab.host_ns, "ip6 and not icmp6")
    try:
        assert jail_run("six1", "ip", "-6", "addr").stdout.strip() == ""
        assert jail_run("six1", "ping", "-6", "-c", "1", "-W", "1", lab.SERVER6_ADDR).returncode != 0
        udp = jail_run("six1", sys.executable, "-c",
                       "import socket;s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);"
                       f"s.sendto(b'x',('{lab.SERVER6_ADDR}',53))")
        assert udp.returncode != 0
        assert fetch("six1", f"http://[{lab.SERVER6_ADDR}]/", timeout=2).returncode != 0
    finally:
        packets = capture.stop()
    assert packets == []


def test_jail_cannot_open_connections_to_the_host(engine, lab, tmp_path):
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "0.0.0.0", "8931"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        jail = engine.create(JailSpec("in1", dns=LAB_DNS), 1000)
        assert wait_until(lambda: subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:8931/"]).returncode == 0, 5), \
            "control: the host service answers locally"
        for address in (jail.addressing.host_address, lab.HOST_UPLINK_ADDR, lab.WG_CLIENT_TUNNEL_ADDR):
            assert fetch("in1", f"http://{address}:8931/", timeout=1).returncode != 0, address
        assert fetch("in1").returncode == 0, "the jail still reaches the internet"
    finally:
        server.kill()
        server.wait()


def test_twenty_jails_concurrently(engine):
    names = [f"c{i}" for i in range(20)]
    specs = [JailSpec(n, vpn="wg0" if i % 2 else None, dns=LAB_DNS) for i, n in enumerate(names)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        jails = list(pool.map(lambda spec: engine.create(spec, 1000), specs))
    assert len({j.addressing.network for j in jails}) == 20
    owners, chains = engine.firewall.list_owned()
    assert owners == {f"aj-{n}" for n in names} | {rules.GUARD_CHAIN}
    assert chains == {f"aj-{n}" for n in names} | {rules.GUARD_CHAIN}
    _assert_one_set_of_rules_each(engine.firewall.name, jails)
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(engine.destroy, names))
    assert engine.list() == []
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_teardown_deletes_each_hook_as_the_exact_rule_it_was(engine, lab, monkeypatch):
    engine.create(JailSpec("stay1", dns=LAB_DNS), 1000)  # keeps the forwarding guard in place
    engine.create(JailSpec("exact1", dns=LAB_DNS, publish=(Publish(47001, 8080),),
                           deny=("198.51.100.0/24",), no_lan=True), 1000)
    engine.create(JailSpec("exact2", vpn=lab.wg_ifname, dns=LAB_DNS, deny=("198.51.100.0/24",),
                           no_lan=True), 1000)

    def walk(*_):
        raise AssertionError("walked the shared chains")

    if engine.firewall.name == "xtables":
        monkeypatch.setattr(xt, "_remove_owned", walk)
    else:
        monkeypatch.setattr(engine.firewall, "_list_table", walk)
    engine.destroy("exact1")
    engine.destroy("exact2")
    monkeypatch.undo()
    owners, chains = engine.firewall.list_owned()
    assert owners == chains == {"aj-stay1", rules.GUARD_CHAIN}


def test_counters_read_by_position_equal_counters_read_by_comment(engine, lab):
    jail = engine.create(JailSpec("count1", vpn=lab.wg_ifname, dns=LAB_DNS, deny=("198.51.100.0/24",)), 1000)
    assert fetch("count1").returncode == 0
    lab.wg_down()  # the kill switch drops on the host's side (a denied range: in the jail's own namespace)
    try:
        assert fetch("count1", timeout=1).returncode != 0
    finally:
        lab.wg_up()
    by_position = engine.firewall.read_counters({"count1": jail.firewall_rules.roles})
    by_comment = engine.firewall.read_counters({"count1": ()})  # no layout: every rule decoded
    assert by_position == by_comment
    totals = by_position["count1"]
    assert totals["in"][0] > 0 and totals["out"][0] > 0 and totals["dropped"][0] > 0


def test_a_hand_made_rule_in_a_jail_chain_does_not_shift_the_counters(engine):
    jail = engine.create(JailSpec("count2", dns=LAB_DNS), 1000)
    assert fetch("count2").returncode == 0
    before = engine.firewall.read_counters({"count2": jail.firewall_rules.roles})
    by_hand = {"xtables": ["iptables-legacy", "-w", "-I", "aj-count2", "1", "-p", "icmp", "-j", "RETURN"],
               "nftables": ["nft", "insert", "rule", "inet", "appjail", "aj-count2", "meta", "l4proto",
                            "icmp", "counter", "return"]}
    subprocess.run(by_hand[engine.firewall.name], check=True)
    after = engine.firewall.read_counters({"count2": jail.firewall_rules.roles})
    assert after == before and before["count2"]["out"][0] > 0


def test_a_hook_missing_at_teardown_is_found_by_walking(engine):
    """Someone removed part of what reaches the jail: the rest is found and removed all the same."""
    jail = engine.create(JailSpec("walk1", dns=LAB_DNS, deny=("198.51.100.0/24",)), 1000)
    hooks = jail.firewall_rules.hooks
    # someone deleted the last hook by hand
    if engine.firewall.name == "xtables":
        with xt.batch(hooks[-1].table) as tables:
            xt._chain(tables[hooks[-1].table], hooks[-1].chain).delete_rule(
                xt._encode(hooks[-1].rule))
    else:
        subprocess.run(["nft", "delete", "element", "inet", "appjail", "nat_out",
                        f"{{ {jail.addressing.network} }}"], check=True)
    engine.destroy("walk1")
    assert residue_in_host() == [] and residue_machine_wide() == []


def _assert_one_set_of_rules_each(backend: str, jails: list) -> None:
    """Each jail reached once from each shared chain, and its chain as built, as the admin's tools list them."""
    if backend == "xtables":
        saved = subprocess.run(["iptables-legacy-save"], capture_output=True, text=True, check=True).stdout
        for jail in jails:
            hooks = [line for line in saved.splitlines() if f"--comment aj-{jail.name} " in line + " "]
            assert len(hooks) == 5, (jail.name, hooks)
            own = [line for line in saved.splitlines() if line.startswith(f"-A aj-{jail.name} ")]
            assert len(own) == len(jail.firewall_rules.chain_rules), (jail.name, own)
        return
    listing = json.loads(subprocess.run(["nft", "-j", "list", "table", "inet", "appjail"], capture_output=True,
                                        text=True, check=True).stdout)["nftables"]
    owners = [(item[0] if isinstance(item, list) else item)["elem"]["comment"]
              for kind in ("map", "set") for keyed in (x[kind] for x in listing if kind in x)
              for item in keyed.get("elem", [])]
    rules = [x["rule"]["chain"] for x in listing if "rule" in x]
    for jail in jails:  # jail_dev, jail_in, and nat_out or vpn_out
        chain = jail.firewall_rules.chain
        assert owners.count(chain) == 3, (jail.name, owners)
        built = sum(len(nft.encode_chain_rule(chain, rule)) for rule in jail.firewall_rules.chain_rules)
        assert rules.count(chain) == built, (jail.name, rules)


def test_reconcile_after_a_crash_leaves_nothing(in_host, tmp_path):
    run_dir = tmp_path / "run"
    crashed = Engine(run_dir=run_dir)
    crashed.create(JailSpec("crash1", dns=LAB_DNS), 1000)
    crashed.create(JailSpec("crash2", vpn="wg0", dns=LAB_DNS), 1000)
    # a creation that died halfway: record says "creating", namespace exists
    StateStore(run_dir).save(JailRecord(JailSpec("half", dns=LAB_DNS), 1000, 99))
    netns.create_namespace("aj-half")
    Path("/etc/netns/aj-half").mkdir(parents=True)
    del crashed  # the helper died: no teardown ran

    report = Engine(run_dir=run_dir).reconcile(adopt=False)
    assert report.adopted == []
    assert "namespace aj-half" in report.removed and "link aj-crash1" in report.removed
    assert residue_in_host() == [] and residue_machine_wide() == []
    assert StateStore(run_dir).load_all() == ([], [])
    assert not (run_dir / "forwarding.json").exists()


def test_reconcile_adopts_finished_jails(in_host, tmp_path, lab):
    run_dir = tmp_path / "run"
    Engine(run_dir=run_dir).create(JailSpec("adopt1", vpn="wg0", dns=LAB_DNS), 1000)
    engine = Engine(run_dir=run_dir)
    report = engine.reconcile()
    try:
        assert report.adopted == ["adopt1"] and report.removed == []
        assert engine.get("adopt1").owner_uid == 1000
        assert fetch("adopt1").stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n"
    finally:
        engine.destroy("adopt1")
    assert residue_in_host() == [] and residue_machine_wide() == []


def test_reconcile_leaves_the_jails_of_a_helper_in_another_namespace(engine, tmp_path):
    engine.create(JailSpec("theirs1", dns=LAB_DNS), 1000)
    subprocess.run(["ip", "netns", "add", "ajlt-otherhost"], check=True)
    try:
        with in_netns("ajlt-otherhost"):
            report = Engine(run_dir=tmp_path / "other").reconcile()
    finally:
        subprocess.run(["ip", "netns", "del", "ajlt-otherhost"], check=True)
    assert report.removed == []
    assert "aj-theirs1" in netns.list_namespaces("aj-")
    assert Path("/etc/netns/aj-theirs1/resolv.conf").exists()
    assert jail_run("theirs1", "ip", "-br", "link", "show", "eth0").returncode == 0


def test_failed_creation_rolls_back(engine):
    engine.create(JailSpec("keep1", dns=LAB_DNS), 1000)
    blocker = Path("/etc/netns/aj-rb1")
    blocker.mkdir(parents=True)  # the last step (resolver files) will fail
    try:
        with pytest.raises(JailError, match="could not create jail 'rb1'"):
            engine.create(JailSpec("rb1", vpn="wg0", dns=LAB_DNS), 1000)
    finally:
        blocker.rmdir()
    assert [j.name for j in engine.list()] == ["keep1"]
    owners, chains = engine.firewall.list_owned()
    assert "aj-rb1" not in owners | chains
    assert netns.list_namespaces("aj-") == ["aj-keep1"]
    assert fetch("keep1").returncode == 0, "the other jail is untouched"


@pytest.mark.parametrize("make", [
    lambda: JailSpec("../x"),
    lambda: JailSpec("a" * 16),
    lambda: JailSpec("ok", vpn="wg0;x"),
    lambda: JailSpec("ok", dns=("300.1.1.1",)),
])
def test_bad_input_is_refused_before_anything_changes(engine, make):
    before = (sorted(os.listdir("/run/netns")), residue_in_host())
    with pytest.raises(ValidationError):
        engine.create(make(), 1000)
    assert (sorted(os.listdir("/run/netns")), residue_in_host()) == before
    assert engine.store.load_all() == ([], [])


def test_bad_owner_uid_is_refused(engine):
    with pytest.raises(ValidationError):
        engine.create(JailSpec("uid1", dns=LAB_DNS), -1)
    assert residue_machine_wide() == []


def test_link_watch_survives_concurrent_changes(engine, lab):
    """A VPN flapping while jails come and go: no exception, no stale route."""
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            lab.wg_down()
            lab.wg_up()

    flapper = threading.Thread(target=flap)
    flapper.start()
    try:
        for i in range(5):
            engine.create(JailSpec(f"flap{i}", vpn="wg0", dns=LAB_DNS), 1000)
    finally:
        stop.set()
        flapper.join()
    lab.wg_up()
    assert wait_until(lambda: fetch("flap4", timeout=1).returncode == 0, timeout=10)


def _host_firewall() -> dict[str, str]:
    """The lab host's rulesets as each tool lists them, counters zeroed."""
    import re

    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    legacy = ""
    if Path("/proc/thread-self/net/ip_tables_names").read_text().split():
        legacy = subprocess.run(["iptables-legacy-save"], capture_output=True, text=True, check=True).stdout
    legacy = "\n".join(line for line in legacy.splitlines() if not line.startswith("#"))
    return {"nft": re.sub(r"packets \d+ bytes \d+", "", ruleset), "legacy": re.sub(r"\[\d+:\d+\]", "", legacy)}


def test_the_host_firewall_is_as_found_after_the_last_jail(engine, lab):
    before = _host_firewall()
    engine.create(JailSpec("found1", dns=LAB_DNS, publish=(Publish(47002, 8080),)), 1000)
    engine.create(JailSpec("found2", vpn=lab.wg_ifname, dns=LAB_DNS, deny=("198.51.100.0/24",)), 1000)
    assert fetch("found1").returncode == 0
    assert _host_firewall() != before, "control: the jails' rules show"
    engine.destroy("found1")
    engine.destroy("found2")
    assert _host_firewall() == before
