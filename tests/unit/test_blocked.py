"""Blocked destinations: the helper's bounded table, first-seen times, NFLOG records."""

import socket
import struct

from appjail.helper.firewall import nflog
from appjail.helper.firewall.blocked import BLOCKED_TIMEOUT_S, Blocked, BlockedTable, FirstSeen, oldest, top
from appjail.helper.firewall.rules import DENY, KILL_SWITCH, reason_code
from appjail.helper.kernel import nlraw


def test_the_table_adds_up_per_destination_and_keeps_first_and_last():
    table = BlockedTable(size=10)
    key = ("tcp", "192.0.2.80", 80, DENY)
    table.hit("web", key, 60, now=100)
    table.hit("web", key, 52, now=105)
    assert table.entries("web", now=106) == [Blocked(*key, 2, 112, 100, 105)]
    assert table.entries("other", now=106) == []


def test_the_table_is_bounded_and_the_least_recently_hit_goes_first():
    table = BlockedTable(size=3)
    for port in (1, 2, 3):
        table.hit("web", ("udp", "192.0.2.1", port, DENY), 30, now=port)
    table.hit("web", ("udp", "192.0.2.1", 1, DENY), 30, now=10)  # 1 hit again: 2 is now the oldest
    table.hit("web", ("udp", "192.0.2.1", 4, DENY), 30, now=11)
    assert sorted(entry.dport for entry in table.entries("web", now=12)) == [1, 3, 4]
    for port in range(5, 10_000):
        table.hit("web", ("udp", "192.0.2.1", port, DENY), 30, now=12)
    assert len(table) == 3
    table.forget("web")
    assert len(table) == 0


def test_entries_not_hit_within_the_timeout_go():
    table = BlockedTable()
    table.hit("web", ("udp", "192.0.2.1", 1, DENY), 30, now=0)
    table.hit("web", ("udp", "192.0.2.1", 2, DENY), 30, now=500)
    assert [e.dport for e in table.entries("web", now=BLOCKED_TIMEOUT_S + 100)] == [2]


def test_top_is_the_most_hit_and_oldest_the_least_recent():
    a = Blocked("tcp", "192.0.2.1", 80, DENY, 5, 300, 1, 9)
    b = Blocked("tcp", "192.0.2.2", 80, DENY, 9, 540, 1, 3)
    c = Blocked("udp", "192.0.2.3", 53, KILL_SWITCH, 5, 300, 1, 12)
    assert top([a, b, c]) == [b, c, a] and top([a, b, c], 1) == [b]
    assert oldest([a, b, c], 2) == [b, a]


def test_first_seen_is_kept_while_the_kernel_keeps_the_entry():
    seen = FirstSeen()
    entry = Blocked("tcp", "192.0.2.80", 80, DENY, 1, 60, 50, 50)
    assert seen.stamp("web", [entry]) == [entry]
    later = entry._replace(packets=4, first=90, last=90)
    assert seen.stamp("web", [later]) == [later._replace(first=50)]
    assert seen.stamp("web", []) == []  # gone from the kernel: forgotten
    assert seen.stamp("web", [later]) == [later]


def _ipv4(proto: int, dst: str, dport: int, length: int, options: bytes = b"") -> bytes:
    ihl = (20 + len(options)) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, length, 0, 0, 64, proto, 0,
                         socket.inet_aton("10.231.0.2"), socket.inet_aton(dst)) + options
    return header + struct.pack("!HH", 40000, dport) + b"\0" * 8


def test_an_nflog_packet_names_the_jail_the_destination_and_the_reason():
    names = {7: "aj-web", 8: "eth0"}.get
    group = nflog.group(reason_code(DENY))
    attributes = {nflog.NFULA_IFINDEX_INDEV: struct.pack("!I", 7),
                  nflog.NFULA_PAYLOAD: _ipv4(6, "192.0.2.80", 80, 60, options=b"\1" * 8)}
    assert nflog.parse_packet(group, attributes, names) == ("web", ("tcp", "192.0.2.80", 80, DENY), 60)
    icmp = {**attributes, nflog.NFULA_PAYLOAD: _ipv4(1, "192.0.2.80", 0x0800, 84)}
    assert nflog.parse_packet(nflog.group(reason_code(KILL_SWITCH)), icmp, names) == (
        "web", ("icmp", "192.0.2.80", 0, KILL_SWITCH), 84)
    assert nflog.parse_packet(group, {**attributes, nflog.NFULA_IFINDEX_INDEV: struct.pack("!I", 8)}, names) is None
    assert nflog.parse_packet(1, attributes, names) is None  # someone else's group
    assert nflog.parse_packet(group, {**attributes, nflog.NFULA_PAYLOAD: b"\x60" + b"\0" * 39}, names) is None


def test_netlink_messages_and_attributes_are_walked_with_alignment():
    message = nlraw.request(0x400, 0, 0, 0, nlraw.attribute(nflog.NFULA_IFINDEX_INDEV, b"\0\0\0\7"),
                            nlraw.attribute(nflog.NFULA_PAYLOAD, b"abcde"))
    data = message + message[:10]  # a truncated second message is left alone
    (kind, start, end), = list(nlraw.messages(data))
    assert kind == 0x400
    assert nlraw.attributes(data, start + 4, end) == {nflog.NFULA_IFINDEX_INDEV: b"\0\0\0\7",
                                                      nflog.NFULA_PAYLOAD: b"abcde"}


def test_an_x_tables_record_is_nflog_to_the_group_of_its_reason():
    from appjail.helper.firewall.xt import _nflog

    record = {"in-interface": "aj-web", "target": {"RECORD": {"jail": "web", "reason": DENY}}}
    assert _nflog(record) == {"in-interface": "aj-web",
                              "target": {"NFLOG": {"nflog-group": str(nflog.GROUP_BASE + 2)}}}
    assert _nflog({"target": "DROP"}) == {"target": "DROP"}
