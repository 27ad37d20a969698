"""The .ovpn allow-list: what passes to openvpn, what is refused (one sentence naming the line),
the CLI's auth-user-pass file put inline, and openvpn's --up report checked."""

from __future__ import annotations

import os
import re

import pytest

from appjail import cli, model, tunnelfiles
from appjail.model import ValidationError
from appjail.ovpnconf import parse, parse_up

from ..ovpnfiles import BLOCKS, CA, KEY, client

TEXT = client("client", "dev tun", "proto udp", "remote vpn.example.com 1194", "nobind", "persist-tun", "verb 4",
              "remote-cert-tls server", "verify-x509-name 'C=US, CN=vpn' subject", "cipher AES-256-GCM")


def line_of(text: str, fragment: str) -> int:
    return text[:text.index(fragment)].count("\n") + 1


def test_a_provider_file_is_rebuilt_from_what_was_checked():
    config = parse(TEXT.replace("<ca>\n", "<ca>\nCertificate:\n    Data: text easy-rsa writes\n"))
    text = config.config_text()
    assert text.startswith("client\nproto udp\nremote vpn.example.com 1194\nnobind\nremote-cert-tls server\n"
                           f'verify-x509-name "C=US, CN=vpn" subject\ncipher AES-256-GCM\n<ca>\n{CA}\n</ca>\n')
    for dropped in ("dev tun", "persist-tun", "verb", "Certificate:"):  # appjail's own device, reconnection, log
        assert dropped not in text
    assert f"<key>\n{KEY}\n</key>" in text
    summary = config.summary()
    assert summary["endpoint"] == "vpn.example.com:1194/udp" and summary["peer"].startswith("sha256:")
    assert KEY.splitlines()[3] not in repr(summary), "no key in what is recorded and shown"


def test_port_is_the_servers_port_only():
    config = parse(TEXT.replace("remote vpn.example.com 1194", "remote vpn.example.com\nport 443"))
    assert ("rport", ("443",)) in config.directives and config.remotes == ("vpn.example.com:443/udp",)
    assert "\nport" not in config.config_text()


@pytest.mark.parametrize(("line", "problem"), [
    ("up /etc/openvpn/update-resolv-conf", "up runs a program on the host"),
    ("script-security 2", "script-security would let the file run programs on the host"),
    ("plugin /usr/lib/x.so", "plugin loads a module into openvpn"),
    ("--plugin /usr/lib/x.so", "plugin loads a module into openvpn"),
    ("management 127.0.0.1 7505", "management opens a control socket"),
    ("log /tmp/openvpn.log", "log writes a file on the host"),
    ("status /tmp/status", "status writes a file on the host"),
    ("config /etc/shadow", "config reads a file of the host"),
    ("cd /etc/openvpn", "cd reads a file of the host"),
    ("chroot /var/empty", "chroot reads a file of the host"),
    ("user nobody", "user changes openvpn's user (appjail runs it)"),
    ("daemon", "daemon would detach openvpn from appjail's helper"),
    ("setenv opt block-outside-dns", "setenv changes how openvpn reads options"),
    ("lport 53", "lport would hold a port on the host (appjail's openvpn never binds one)"),
    ("bind", "bind would hold a port on the host (appjail's openvpn never binds one)"),
])
def test_forbidden_directives_are_refused_naming_the_line(line, problem):
    with pytest.raises(ValidationError, match=rf"^OpenVPN file, line 4: {re.escape(problem)}, which appjail does not "
                                              r"allow: remove the line$"):
        parse(TEXT.replace("proto udp\n", f"proto udp\n{line}\n"))


@pytest.mark.parametrize(("change", "message"), [
    (("nobind\n", "nobind\nsocks-proxy 192.0.2.1\n"), "line 6: unknown directive 'socks-proxy'"),
    ((f"<ca>\n{CA}\n</ca>\n", ""), "line 73: the file ends without a <ca> block"),
    ((f"<ca>\n{CA}\n</ca>\n", "ca /etc/openvpn/ca.crt\n"),
     "line 11: ca names a file (/etc/openvpn/ca.crt), which the helper never opens"),
    (("dev tun", "dev tap"), "line 2: dev 'tap': appjail makes a tun device only"),
    (("remote vpn.example.com 1194", "remote vpn.example.com 99999"), "line 4: remote port '99999'"),
    (("remote vpn.example.com 1194", "remote 'a b'"), "line 4: remote 'a b' is neither a host name"),
    (("tls-crypt>", "connection>"), "line 62: unknown inline block <connection>"),
    (("</key>\n", ""), "line 33: openvpn would not read it: <key> has no </key>"),
    ((CA.splitlines()[2], "<cert>"), "line 14: <ca> from line 11 is not closed before this tag"),
    (("cipher AES-256-GCM", 'cipher "AES\\x"'), "line 10: openvpn would not read it: a backslash before"),
    (("cipher AES-256-GCM", 'cipher "AES\\"x"'), "line 10: a backslash outside a block is not supported"),
    (("cipher AES-256-GCM", "cipher 'AES\"x'"), "line 10: 'AES\"x': quotes inside a word are not supported"),
    (("cipher AES-256-GCM", "cipher 'AES"), "line 10: openvpn would not read it: a quotation is not closed"),
    (("cipher AES-256-GCM", "cipher AES\x0c-256"), "line 10: the line holds the control character 0x0c"),
    (("cipher AES-256-GCM", "cipher AES\r-256"), "line 10: the line holds the control character 0x0d"),
    (("cipher AES-256-GCM", "cipher AES\x00-256"), "line 10: the line holds the control character 0x00"),
    (("cipher AES-256-GCM", "cipher AES-256-GCM " + "#" * 250), "line 10: the line is longer than 254 bytes"),
    (("<ca>", '"<ca>"'), "line 11: write <ca> alone on its line, without quotes"),
    (("</ca>", "</ca> plugin /x.so"), "line 21: write </ca> alone on its line"),
    ((CA.splitlines()[2], "not base64!"), "line 11: <ca> has a line in its CERTIFICATE that is not base64"),
    (("-----BEGIN PRIVATE KEY-----", "-----BEGIN CERTIFICATE-----"), "line 33: <key> holds a CERTIFICATE, not PRIVATE KEY"),
    (("remote-cert-tls server", "verify-x509-name Zürich name"), "line 8: 'Zürich' is not ASCII"),
])
def test_mistakes_are_one_sentence_naming_the_line(change, message):
    text = TEXT.replace(*change)
    with pytest.raises(ValidationError, match=rf"^OpenVPN file, {re.escape(message)}"):
        parse(text)


def test_crlf_files_and_a_byte_order_mark_read_as_openvpn_reads_them():
    config = parse("\ufeff" + TEXT.replace("\n", "\r\n"))
    assert config.config_text() == parse(TEXT).config_text()


def test_auth_user_pass_needs_its_credentials_inline():
    without_cert = TEXT.replace(BLOCKS, BLOCKS[:BLOCKS.index("<cert>")] + BLOCKS[BLOCKS.index("<tls-crypt>"):])
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
    sent = tunnelfiles.read_file_option(option, str(path))
    assert sent.splitlines()[4] == "auth-user-pass" and sent.endswith("<auth-user-pass>\nme\npw\n</auth-user-pass>\n")
    assert sent.splitlines()[:4] == TEXT.splitlines()[:4] and "creds" not in sent
    options, _ = cli.run_request(cli.quick_run_args(["run", "--openvpn", str(path), "--", "curl"]))
    assert options == {"name": "curl", "openvpn": sent}
    (tmp_path / "creds").chmod(0o666)
    with pytest.raises(ValidationError, match=r"^auth-user-pass \(line 5\) .*creds: others may write it"):
        tunnelfiles.read_file_option(option, str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_an_auth_file_of_another_user_is_refused(tmp_path):
    (tmp_path / "creds").write_text("me\npw\n")
    os.chown(tmp_path / "creds", 65534, 65534)
    path = tmp_path / "vpn.ovpn"
    path.write_text(TEXT.replace("nobind", "auth-user-pass creds"))
    path.chmod(0o600)
    with pytest.raises(ValidationError, match=r"creds: not your file \(owner uid 65534\)$"):
        tunnelfiles.read_file_option(next(o for o in model.OPTIONS if o.key == "openvpn"), str(path))


@pytest.mark.parametrize(("change", "message"), [
    (("nobind", "up /bin/sh"), "line 5: up runs a program"),
    ((f"<ca>\n{CA}\n</ca>\n", ""), "line 73: the file ends without a <ca> block"),
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
    from appjail.helper.tunnels import ovpnhook
    env = {**UP, "password": "pw", "common_name": "x", "PATH": "/bin"}
    assert ovpnhook.report(env) == UP


def test_a_member_is_told_appjails_sentences_never_openvpns_lines():
    from appjail.helper.tunnels.openvpn import explain

    lines = ["Options error: In [CMD-LINE]:1: Error opening configuration file: /root/secret",
             "root:$6$hash-of-a-password:19000:0:99999:7:::", "AUTH: Received control message: AUTH_FAILED"]
    told = explain(lines)
    assert told == "openvpn refused an option of the file; the server refused the user name or password"
    assert "hash" not in told and "secret" not in told
    assert explain(["something new"]) == "openvpn said nothing appjail knows (the helper's log has its words)"
