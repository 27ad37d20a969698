from pathlib import Path

import pytest

from appjail.helper.hostports import bound_sockets, port_in_use
from appjail.model import JailSpec, Publish, ValidationError, parse_publish, validate_deny


@pytest.mark.parametrize("text,expected", [
    ("6000:8080", Publish(6000, 8080, "tcp", None)),
    ("6000:8080/udp", Publish(6000, 8080, "udp", None)),
    ("192.0.2.7:80:8080/tcp", Publish(80, 8080, "tcp", "192.0.2.7")),
])
def test_publish_parses(text, expected):
    assert parse_publish(text) == expected
    assert str(expected) == (text if "/" in text else text + "/tcp")


@pytest.mark.parametrize("text", ["6000", "0:80", "6000:70000", "a:b", "6000:80/sctp", "x.y:1:2",
                                  "1:2:3:4", "6000:8080/", ":80", 6000, "6000:80\0"])
def test_bad_publish_is_refused(text):
    with pytest.raises(ValidationError):
        parse_publish(text)


def test_overlapping_publish_and_vpn_publish_are_refused():
    with pytest.raises(ValidationError, match="given twice"):
        JailSpec("web", publish=("6000:80", "192.0.2.7:6000:81"))
    JailSpec("web", publish=("6000:80", "6000:80/udp"))  # other protocol: fine
    with pytest.raises(ValidationError, match="--vpn"):
        JailSpec("web", vpn="wg0", publish=("6000:80",))


def test_deny_takes_cidrs_only():
    assert validate_deny(["192.0.2.0/24", "192.0.2.0/24"]) == ("192.0.2.0/24",)
    for bad in (["192.0.2.1/24"], ["300.0.0.0/8"], ["x"], "192.0.2.0/24"):
        with pytest.raises(ValidationError):
            validate_deny(bad)


TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1770 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:1771 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 070200C0:1772 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 070200C0:1773 0A0200C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1
"""


def test_host_ports_from_proc(tmp_path: Path):
    (tmp_path / "tcp").write_text(TCP)
    assert bound_sockets("tcp", tmp_path) == {("0.0.0.0", 6000), ("127.0.0.1", 6001), ("192.0.2.7", 6002)}
    assert port_in_use("tcp", 6000, None, tmp_path)
    assert port_in_use("tcp", 6000, "192.0.2.9", tmp_path)  # the wildcard takes every address
    assert not port_in_use("tcp", 6001, None, tmp_path)  # loopback only: not reached by DNAT
    assert port_in_use("tcp", 6002, None, tmp_path) and not port_in_use("tcp", 6002, "192.0.2.9", tmp_path)
    assert not port_in_use("tcp", 6003, None, tmp_path)  # an established connection, no listener
    assert not port_in_use("udp", 6000, None, tmp_path)
