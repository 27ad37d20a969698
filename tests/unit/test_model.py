import pytest

from appjail.model import (JailSpec, ValidationError, validate_dns, validate_ifname,
                           validate_name, validate_network)


@pytest.mark.parametrize("name", ["a", "firefox", "0", "web-1", "abcdefghijkl"])
def test_good_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a" * 13, "a" * 16, "-a", "Firefox", "a b",
                                  "a\x00", "a/b", "é", None, 5, ["a"]])
def test_bad_names(name):
    with pytest.raises(ValidationError, match="invalid jail name"):
        validate_name(name)


@pytest.mark.parametrize("ifname", ["wg0", "tun0", "wg-mullvad", "eth0.100", "a" * 15])
def test_good_ifnames(ifname):
    assert validate_ifname(ifname) == ifname


@pytest.mark.parametrize("ifname", ["", "wg0;x", "a" * 16, "..", "wg 0", "wg0/..", "wg0\n",
                                    "$(reboot)", "-wg0", None, 0])
def test_bad_ifnames(ifname):
    with pytest.raises(ValidationError, match="invalid interface name"):
        validate_ifname(ifname)


def test_jail_interface_cannot_be_a_vpn():
    with pytest.raises(ValidationError, match="another jail"):
        validate_ifname("aj-web")


def test_dns_normalised_and_deduplicated():
    assert validate_dns(["192.0.2.53", "192.0.2.53", "198.51.100.1"]) == ("192.0.2.53", "198.51.100.1")


@pytest.mark.parametrize("servers,message", [
    (["300.1.1.1"], "not an IPv4 address"),
    (["1.1.1"], "not an IPv4 address"),
    (["127.0.0.53"], "loopback"),
    (["0.0.0.0"], "not a unicast"),
    (["224.0.0.1"], "not a unicast"),
    (["::1"], "not an IPv4 address"),
    (["１.1.1.1"], "not an IPv4 address"),
    (["192.0.2.1"] * 2 + ["192.0.2.2", "192.0.2.3"], "too many"),
    ("192.0.2.1", "expected a list"),
])
def test_bad_dns(servers, message):
    with pytest.raises(ValidationError, match=message):
        validate_dns(servers)


def test_spec_validates_every_field():
    with pytest.raises(ValidationError):
        JailSpec("ok", vpn="wg0;x")
    with pytest.raises(ValidationError):
        JailSpec("ok", dns=("300.1.1.1",))
    with pytest.raises(ValidationError):
        JailSpec("ok", keep="yes")  # type: ignore[arg-type]
    assert JailSpec("ok", vpn="wg0", dns=["192.0.2.53"]).dns == ("192.0.2.53",)


def test_network():
    assert str(validate_network("10.0.0.0/8")) == "10.0.0.0/8"
    with pytest.raises(ValidationError):
        validate_network("10.0.0.1/8")


@pytest.mark.parametrize("ifname", ["all", "default", "lo"])
def test_names_that_are_not_one_interface_cannot_be_a_vpn(ifname):
    with pytest.raises(ValidationError, match="not a VPN interface"):
        validate_ifname(ifname)
