"""doctor's reading of the host's firewalls, on rulesets captured from the real thing
(`nft -j list ruleset` in a namespace after Docker's setup, `ufw --force enable`,
firewalld with and without appjail's interfaces, an admin's `inet filter`)."""

import copy
import json
from pathlib import Path

import pytest

from appjail.hostfirewall import FAIL, OK, analyse, xt_place, xt_tagged

RULESETS = Path(__file__).parent / "rulesets"


def ruleset(name: str) -> dict:
    return json.loads((RULESETS / f"{name}.json").read_text())


def by_chain(findings, words: str):
    found = [f for f in findings if words in f.message]
    assert len(found) == 1, findings
    return found[0]


def test_an_admin_forward_chain_that_drops_is_a_problem_with_the_lines_to_add():
    finding = by_chain(analyse(ruleset("admin"), ""), "inet filter chain forward")
    assert finding.level == FAIL and "policy drop" in finding.message
    assert finding.fix == ('nft insert rule inet filter forward iifname "aj-*" accept',
                           'nft insert rule inet filter forward oifname "aj-*" ct state established,related accept',
                           'nft insert rule inet filter forward oifname "aj-*" ct status dnat accept')
    assert all("hook input" not in f.message for f in analyse(ruleset("admin"), "")), "only forward/postrouting"


def test_the_admin_chain_is_ok_once_it_accepts_appjails_interfaces():
    fixed = copy.deepcopy(ruleset("admin"))
    for key in ("iifname", "oifname"):
        fixed["nftables"].append({"rule": {"family": "inet", "table": "filter", "chain": "forward", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": "aj-*"}}, {"accept": None}]}})
    finding = by_chain(analyse(fixed, ""), "inet filter chain forward")
    assert finding.level == OK and "accepts appjail's interfaces" in finding.message


def test_a_final_unconditional_drop_counts_as_dropping():
    final_drop = copy.deepcopy(ruleset("admin"))
    for item in final_drop["nftables"]:
        if "chain" in item:
            item["chain"]["policy"] = "accept"
    assert by_chain(analyse(final_drop, ""), "inet filter chain forward").level == OK
    final_drop["nftables"].append({"rule": {"family": "inet", "table": "filter", "chain": "forward",
                                            "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]}})
    assert by_chain(analyse(final_drop, ""), "inet filter chain forward").level == FAIL


def test_docker_is_handled_in_docker_user():
    findings = analyse(ruleset("docker"), "")
    forward = by_chain(findings, "ip filter chain FORWARD")
    assert forward.level == OK and "Docker" in forward.message and "in DOCKER-USER while jails exist" in forward.message
    assert by_chain(findings, "ip nat chain POSTROUTING").level == OK


def test_ufw_is_handled_at_the_top_of_forward():
    findings = analyse(ruleset("ufw"), "")
    forward = by_chain(findings, "ip filter chain FORWARD")
    assert forward.level == OK and "ufw" in forward.message and "at the top of FORWARD" in forward.message
    assert "no IPv6" in by_chain(findings, "ip6 filter chain FORWARD").message


@pytest.mark.parametrize("name, state", [("firewalld", "appjail puts aj-+ into its zone trusted while jails exist"),
                                         ("firewalld-jails", "aj-+ is in its zone trusted now")])
def test_firewalld_is_handled_through_its_zone(name, state):
    forward = by_chain(analyse(ruleset(name), ""), "inet firewalld chain filter_FORWARD")
    assert forward.level == OK and state in forward.message


def test_legacy_chains_are_listed_too():
    save = ("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:aj-web - [0:0]\n"
            "-A FORWARD -i aj-web -m comment --comment aj-web -j aj-web\nCOMMIT\n")
    findings = analyse({}, save)
    assert [f.level for f in findings] == [OK, OK]
    assert "at the top of FORWARD" in by_chain(findings, "iptables-legacy filter chain FORWARD").message
    assert by_chain(findings, "iptables-legacy nat chain POSTROUTING").level == OK


def test_nothing_in_the_way_is_said_so():
    assert [f.level for f in analyse({}, "")] == [OK]


def test_coexist_rules_go_to_docker_user_or_below_appjails_own_hooks():
    docker = "-P FORWARD DROP\n-N DOCKER-USER\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\n"
    assert (xt_place(docker).chain, xt_place(docker).position) == ("DOCKER-USER", 1)
    ufw = (RULESETS / "ufw.iptables-S").read_text()
    assert (xt_place(ufw).chain, xt_place(ufw).position, xt_place(ufw).framework) == ("FORWARD", 1, "ufw")
    own = ("-P FORWARD DROP\n-A FORWARD -m comment --comment aj-GUARD -j aj-GUARD\n"
           "-A FORWARD -i aj-x -m comment --comment aj-x -j aj-x\n-A FORWARD -j LOG\n")
    assert xt_place(own).position == 3, "appjail's own hooks must see jail packets first"
    assert xt_place("-P FORWARD ACCEPT\n-A FORWARD -j REJECT --reject-with icmp-host-prohibited\n") is not None
    assert xt_place("-P FORWARD ACCEPT\n-A FORWARD -i eth0 -j DROP\n") is None


def test_only_appjails_coexist_rules_are_found_for_removal():
    listing = ("-A FORWARD -i aj-+ -m comment --comment appjail -j ACCEPT\n"
               "-A DOCKER-USER -o aj-+ -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment "
               "--comment appjail -j ACCEPT\n"
               "-A FORWARD -i aj-x -m comment --comment aj-x -j aj-x\n"
               "-A FORWARD -m comment --comment appjailx -j ACCEPT\n")
    assert xt_tagged(listing) == [("FORWARD", "-i"), ("DOCKER-USER", "-o")]


def test_doctor_says_whether_systemd_runs_and_what_its_absence_means(tmp_path, capsys):
    from appjail.doctor import check_systemd

    check_systemd(tmp_path / "missing")
    assert capsys.readouterr().out == (
        "[warning] systemd does not run here: programs stay in the helper's cgroup, so neither your logout "
        "nor a limit on your own processes (a fork bomb) reaches them\n")
    check_systemd(tmp_path)
    assert capsys.readouterr().out == ("[     ok] systemd runs here: each program goes into a scope "
                                       "of your user-UID.slice\n")


def test_doctor_names_the_tools_that_may_flush_appjails_rules(tmp_path, capsys):
    from appjail.doctor import check_firewall_tools

    check_firewall_tools(tmp_path)
    assert capsys.readouterr().out == ""
    (tmp_path / "systemd/system/sysinit.target.wants").mkdir(parents=True)
    (tmp_path / "systemd/system/sysinit.target.wants/nftables.service").touch()
    (tmp_path / "ufw").mkdir()
    (tmp_path / "ufw/ufw.conf").write_text("# comment\nENABLED=no\n")
    check_firewall_tools(tmp_path)
    said = capsys.readouterr().out.splitlines()
    assert said == ["[     ok] the nftables service is set up here: its start and restart load /etc/nftables.conf, "
                    "whose `flush ruleset` removes appjail's table; the helper puts appjail's rules back within a "
                    "second when it does, and what a jail must not reach stays closed meanwhile"]
    (tmp_path / "ufw/ufw.conf").write_text("ENABLED=yes\n")
    check_firewall_tools(tmp_path)
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [
        "[     ok] the nftables service is set up here", "[     ok] ufw is set up here"]


def test_coexist_rules_count_as_in_place_only_at_the_place_and_in_order():
    from appjail.helper.firewall.coexist import _in_place

    ours = ["-A DOCKER-USER -i aj-+ -m comment --comment appjail -j ACCEPT",
            "-A DOCKER-USER -o aj-+ -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment "
            "--comment appjail -j ACCEPT"]
    docker = ["-P FORWARD DROP", "-N DOCKER-USER", "-A FORWARD -j DOCKER-USER"]
    place = xt_place("\n".join(docker))
    assert _in_place("\n".join([*docker, *ours, "-A DOCKER-USER -j RETURN"]), place)
    assert not _in_place("\n".join([*docker, "-A DOCKER-USER -j RETURN"]), place), "a restarted dockerd's"
    assert not _in_place("\n".join([*docker, "-A DOCKER-USER -j RETURN", *ours]), place), "below its RETURN"
    moved = [line.replace("DOCKER-USER", "FORWARD", 1) for line in ours]
    assert not _in_place("\n".join([*docker, *moved]), place), "in FORWARD from before Docker came"
    ufw = ["-P FORWARD DROP", "-N ufw-user-forward", "-A FORWARD -i aj-x -m comment --comment aj-x -j aj-x",
           *moved, "-A FORWARD -j ufw-before-forward"]
    assert _in_place("\n".join(ufw), xt_place("\n".join(ufw)))


def test_doctor_says_which_dns_a_vpn_jail_gets_or_names_dns(capsys):
    from appjail import doctor
    from appjail.linkdns import LinkDNS, NoLinkDNS

    doctor.check_vpn_dns("wg0", lambda ifname: LinkDNS(("10.64.0.1",), "systemd-resolved"))
    assert "a --vpn wg0 jail asks 10.64.0.1 for names (from systemd-resolved)" in capsys.readouterr().out

    def none(ifname):
        raise NoLinkDNS("the system has no DNS server for wg0")
    doctor.check_vpn_dns("wg0", none)
    out = capsys.readouterr().out
    assert "[warning] a --vpn wg0 jail without --dns is refused: the system has no DNS server for wg0" in out
    assert "appjail run --vpn wg0 --dns ADDR" in out
