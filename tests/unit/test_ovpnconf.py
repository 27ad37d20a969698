"""The .ovpn allow-list: what passes to openvpn, what is refused (one sentence naming the line),
the CLI's auth-user-pass file put inline, and openvpn's --up report checked."""

from __future__ import annotations

import os
import re

import pytest

from appjail import cli, model, ovpnconf
from appjail.model import ValidationError
from appjail.ovpnconf import parse, parse_up

BLOCKS = "<ca>\nCA-PEM\n</ca>\n<cert>\nCERT-PEM\n</cert>\n<key>\nSECRET-KEY-PEM\n</key>\n<tls-crypt>\nTA\n</tls-crypt>\n"
TEXT = ("client\ndev tun\nproto udp\nremote vpn.example.com 1194\nnobind\npersist-tun\nverb 4\n"
        "remote-cert-tls server\nverify-x509-name 'C=US, CN=vpn' subject\ncipher AES-256-GCM\n" + BLOCKS)


def test_a_provider_file_is_rebuilt_from_what_was_checked():
    config = parse(TEXT)
    text = config.config_text()
    assert text.startswith("client\nproto udp\nremote vpn.example.com 1194\nnobind\nremote-cert-tls server\n"
                           'verify-x509-name "C=US, CN=vpn" subject\ncipher AES-256-GCM\n<ca>\nCA-PEM\n</ca>\n')
    for dropped in ("dev tun", "persist-tun", "verb"):  # appjail's own device, reconnection and log
        assert dropped not in text
    assert "<key>\nSECRET-KEY-PEM\n</key>" in text
    summary = config.summary()
    assert summary["endpoint"] == "vpn.example.com:1194/udp" and summary["peer"].startswith("sha256:")
    assert "SECRET" not in repr(summary), "no key in what is recorded and shown"


@pytest.mark.parametrize(("line", "problem"), [
    ("up /etc/openvpn/update-resolv-conf", "up runs a program on the host"),
    ("script-security 2", "script-security would let the file run programs on the host"),
    ("plugin /usr/lib/x.so", "plugin loads a module into openvpn"),
    ("management 127.0.0.1 7505", "management opens a control socket"),
    ("log /tmp/openvpn.log", "log writes a file on the host"),
    ("status /tmp/status", "status writes a file on the host"),
    ("cd /etc/openvpn", "cd reads a file of the host"),
    ("chroot /var/empty", "chroot reads a file of the host"),
    ("user nobody", "user changes openvpn's user (appjail runs it)"),
    ("daemon", "daemon would detach openvpn from appjail's helper"),
    ("setenv opt block-outside-dns", "setenv changes how openvpn reads options"),
])
def test_forbidden_directives_are_refused_naming_the_line(line, problem):
    with pytest.raises(ValidationError, match=rf"^OpenVPN file, line 4: {re.escape(problem)}, which appjail does not "
                                              r"allow: remove the line$"):
        parse(TEXT.replace("proto udp\n", f"proto udp\n{line}\n"))


@pytest.mark.parametrize(("change", "message"), [
    (("nobind\n", "nobind\nsocks-proxy 192.0.2.1\n"), "line 6: unknown directive 'socks-proxy'"),
    (("<ca>\nCA-PEM\n</ca>\n", ""), "line 19: the file ends without a <ca> block"),
    (("<ca>\nCA-PEM\n</ca>\n", "ca /etc/openvpn/ca.crt\n"),
     r"line 11: ca names a file \(/etc/openvpn/ca.crt\), which the helper never opens"),
    (("<cert>\nCERT-PEM\n</cert>\n", ""), "line 19: the file has a <cert> without a <key>"),
    (("dev tun", "dev tap"), "line 2: dev 'tap': appjail makes a tun device only"),
    (("remote vpn.example.com 1194", "remote vpn.example.com 99999"), "line 4: remote port '99999'"),
    (("remote vpn.example.com 1194", "remote 'a b'"), "line 4: remote 'a b' is neither a host name"),
    (("<tls-crypt>", "<connection>"), "line 20: unknown inline block '<connection>'"),
    (("</key>\n", ""), "line 19: <key> from line 17 is not closed before '<tls-crypt>'"),
    (("cipher AES-256-GCM", 'cipher "AES\\x"'), "line 10: a backslash or quote inside quotes"),
])
def test_mistakes_are_one_sentence_naming_the_line(change, message):
    with pytest.raises(ValidationError, match=rf"^OpenVPN file, {message}"):
        parse(TEXT.replace(*change))


def test_auth_user_pass_needs_its_credentials_inline():
    without_cert = TEXT.replace("<cert>\nCERT-PEM\n</cert>\n<key>\nSECRET-KEY-PEM\n</key>\n", "")
    with pytest.raises(ValidationError, match="line 5: auth-user-pass has no user name and password"):
        parse(without_cert.replace("nobind", "auth-user-pass"))
    with pytest.raises(ValidationError, match="line 5: auth-user-pass names a file"):
        parse(without_cert.replace("nobind", "auth-user-pass /root/creds"))
    with pytest.raises(ValidationError, match="neither <cert> and <key> nor auth-user-pass"):
        parse(without_cert)
    config = parse(without_cert.replace("nobind", "auth-user-pass") + "<auth-user-pass>\nme\npw\n</auth-user-pass>\n")
    text = config.config_text()
    assert "<auth-user-pass>\nme\npw\n</auth-user-pass>" in text
    assert "\nauth-user-pass\n" not in text, "a bare auth-user-pass would ask on a terminal"


def test_the_cli_reads_the_auth_file_as_the_user_and_keeps_line_numbers(tmp_path):
    (tmp_path / "creds").write_text("me\npw\n")
    (tmp_path / "creds").chmod(0o600)
    path = tmp_path / "vpn.ovpn"
    path.write_text(TEXT.replace("nobind", "auth-user-pass creds"))
    path.chmod(0o600)
    option = next(o for o in model.OPTIONS if o.key == "openvpn")
    sent = cli.read_file_option(option, str(path))
    assert sent.splitlines()[4] == "auth-user-pass" and sent.endswith("<auth-user-pass>\nme\npw\n</auth-user-pass>\n")
    assert sent.splitlines()[:4] == TEXT.splitlines()[:4] and "creds" not in sent
    options, _ = cli.run_request(cli.quick_run_args(["run", "--openvpn", str(path), "--", "curl"]))
    assert options == {"name": "curl", "openvpn": sent}
    (tmp_path / "creds").chmod(0o666)
    with pytest.raises(ValidationError, match=r"^auth-user-pass \(line 5\) .*creds: others may write it"):
        cli.read_file_option(option, str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_an_auth_file_of_another_user_is_refused(tmp_path):
    (tmp_path / "creds").write_text("me\npw\n")
    os.chown(tmp_path / "creds", 65534, 65534)
    path = tmp_path / "vpn.ovpn"
    path.write_text(TEXT.replace("nobind", "auth-user-pass creds"))
    path.chmod(0o600)
    with pytest.raises(ValidationError, match=r"creds: not your file \(owner uid 65534\)$"):
        cli.read_file_option(next(o for o in model.OPTIONS if o.key == "openvpn"), str(path))


@pytest.mark.parametrize(("change", "message"), [
    (("nobind", "up /bin/sh"), "line 5: up runs a program"),
    (("<ca>\nCA-PEM\n</ca>\n", ""), "line 19: the file ends without a <ca> block"),
    (("nobind", "bogus 1"), "line 5: unknown directive 'bogus'"),
])
def test_a_bad_file_exits_125_before_any_bus_call(tmp_path, capsys, change, message):
    path = tmp_path / "vpn.ovpn"
    path.write_text(TEXT.replace(*change))
    path.chmod(0o600)
    assert cli.main(["run", "--openvpn", str(path), "true"]) == cli.EXIT_APPJAIL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"OpenVPN file, {message}" in err


def test_profiles_take_openvpn_through_the_option_table(tmp_path):
    from appjail.profiles import load_profiles

    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[vpn]\ncommand = ["curl"]\nopenvpn = "~/vpn/provider.ovpn"\n')
    assert load_profiles(profiles)["vpn"].options["openvpn"] == "~/vpn/provider.ovpn"


UP = {"dev": "aj-x", "ifconfig_local": "203.0.113.130", "ifconfig_netmask": "255.255.255.192", "tun_mtu": "1500",
      "foreign_option_1": "dhcp-option DNS 192.0.2.53", "foreign_option_2": "dhcp-option DOMAIN lab.test",
      "foreign_option_3": "dhcp-option DNS 127.0.0.1", "trusted_ip": "198.51.100.1", "trusted_port": "1194"}


def test_the_up_report_gives_address_mtu_pushed_dns_and_a_route_for_everything():
    up = parse_up(UP)
    assert [str(a) for a in up.addresses] == ["203.0.113.130/26"] and up.mtu == 1500
    assert up.dns == ("192.0.2.53",), "a loopback server is no server for a jail"
    assert [str(r) for r in up.routes()] == ["0.0.0.0/0"] and not up.ipv6 and up.remote == "198.51.100.1:1194"
    net30 = parse_up({**UP, "ifconfig_netmask": "", "ifconfig_remote": "203.0.113.129"})
    assert [str(a) for a in net30.addresses] == ["203.0.113.130/32"]
    both = parse_up({**UP, "ifconfig_ipv6_local": "2001:db8:4::2", "ifconfig_ipv6_netbits": "64"})
    assert both.ipv6 and [str(r) for r in both.routes()] == ["0.0.0.0/0", "::/0"]


@pytest.mark.parametrize("change", [{"ifconfig_local": "127.0.0.1"}, {"ifconfig_local": "x"},
                                    {"tun_mtu": "70000"}, {"ifconfig_netmask": "255.0.255.0"}])
def test_an_unusable_up_report_is_refused(change):
    with pytest.raises(ValidationError):
        parse_up({**UP, **change})


def test_the_hook_sends_only_what_the_helper_reads():
    from appjail.helper import ovpnhook

    env = {**UP, "password": "pw", "common_name": "x", "PATH": "/bin"}
    assert ovpnhook.report(env) == UP


def test_tokens_follow_openvpns_split():
    assert ovpnconf.tokens("remote  a.example 1194 udp # comment", 1) == ["remote", "a.example", "1194", "udp"]
    assert ovpnconf.tokens("verify-x509-name 'CN=a b' name;x", 1) == ["verify-x509-name", "CN=a b", "name;x"]
    assert ovpnconf.tokens("; all comment", 1) == []
