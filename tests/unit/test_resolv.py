import pytest

from appjail.helper.kernel import resolv
STUB = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
UPSTREAM = "# resolved\nnameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver 198.51.100.7\n"


def test_parse_skips_loopback_and_ipv6():
    assert resolv.parse_nameservers(STUB + UPSTREAM) == ["192.0.2.1", "198.51.100.7"]


def test_upstreams_prefer_resolved_list_over_stub(tmp_path):
    resolved, etc = tmp_path / "resolved.conf", tmp_path / "resolv.conf"
    resolved.write_text(UPSTREAM)
    etc.write_text(STUB)
    assert resolv.host_upstream_servers((tmp_path / "missing", resolved, etc)) == ["192.0.2.1", "198.51.100.7"]


def test_only_a_stub_is_an_error_naming_the_files(tmp_path):
    etc = tmp_path / "resolv.conf"
    etc.write_text(STUB)
    with pytest.raises(resolv.NoUpstreamDNS, match="--dns"):
        resolv.host_upstream_servers((etc,))


def test_nsswitch_hosts_line_replaced_rest_kept():
    host = "passwd: files systemd\nhosts: files mdns4_minimal [NOTFOUND=return] resolve dns myhostname\nnetworks: files\n"
    text = resolv.render_nsswitch_conf(host)
    assert "hosts:          files dns\n" in text
    assert "resolve" not in text and "mdns" not in text and "myhostname" not in text
    assert "passwd: files systemd" in text and "networks: files" in text


def test_nsswitch_without_hosts_line_gets_one():
    assert "hosts:          files dns" in resolv.render_nsswitch_conf("passwd: files\n")


def test_files_written_and_removed(tmp_path):
    host_ns = tmp_path / "nsswitch.conf"
    host_ns.write_text("hosts: files resolve\n")
    directory = resolv.write_resolver_files("aj-web", ["192.0.2.53"], tmp_path / "netns", host_ns)
    assert (directory / "resolv.conf").read_text().splitlines()[1:] == ["nameserver 192.0.2.53"]
    assert (directory / "resolv.conf").stat().st_mode & 0o777 == 0o644
    resolv.remove_resolver_files("aj-web", tmp_path / "netns")
    assert not directory.exists()
