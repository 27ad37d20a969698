"""Both firewall backends send the same packets on to a jail for the same rules.

The host's own connections to a published port (the nat OUTPUT hook) are
decided here as each backend's rules would decide them: x_tables by the
jail's OUTPUT hooks in order, nftables by its skeleton's output chain and
the jail's elements in the `published` and `published_lo` maps. Loopback
goes to a jail only for a port published at that loopback address, on both.
"""

from __future__ import annotations

import ipaddress
import re

import pytest

from appjail.helper.firewall import nft
from appjail.helper.firewall.rules import build_jail_rules
from appjail.model import JailSpec, parse_publish

DESTINATIONS = ["127.0.0.1", "127.0.0.5", "192.0.2.7", "198.51.100.3"]


def _in(address: str, match: str) -> bool:
    negated = match.startswith("!")
    inside = ipaddress.ip_address(address) in ipaddress.ip_network(match.lstrip("!"))
    return inside != negated


def xtables_dnat(rules, daddr: str, proto: str, dport: int) -> str | None:
    for hook in rules.hooks:
        rule = hook.rule
        if hook.table_chain != ("nat", "OUTPUT") or rule["protocol"] != proto:
            continue
        if rule[proto]["dport"] == str(dport) and ("dst" not in rule or _in(daddr, rule["dst"])):
            return rule["target"]["DNAT"]["to-destination"]
    return None


def nftables_dnat(rules, daddr: str, proto: str, dport: int) -> str | None:
    chain = re.search(r"chain output \{(.*?)\n    \}", nft.SKELETON, re.S).group(1)
    elements = nft._elements(rules, with_values=True)
    for negated, match, map_name in re.findall(r"ip daddr (!= )?(\S+) .*? map @(\w+)", chain):
        if _in(daddr, match) == bool(negated):
            continue
        for (element, value) in elements.get(map_name, []):
            address, key_proto, port = element["elem"]["val"]["concat"]
            where = address if isinstance(address, str) else "{addr}/{len}".format(**address["prefix"])
            if key_proto == proto and port == dport and _in(daddr, where):
                jail, jail_port = value["concat"]
                return f"{jail}:{jail_port}"
    return None


@pytest.mark.parametrize("published", ["8080:80", "192.0.2.7:8080:80", "127.0.0.1:8080:80", "127.0.0.5:5353:53/udp"])
def test_the_hosts_own_connections_to_a_published_port_go_the_same_way_on_both(published):
    spec = JailSpec(name="web", publish=(parse_publish(published),))
    rules = build_jail_rules(spec, "aj-web", "10.231.0.0/30", "10.231.0.2")
    publish = spec.publish[0]
    for daddr in DESTINATIONS:
        for proto in ("tcp", "udp"):
            expected = nftables_dnat(rules, daddr, proto, publish.host_port)
            assert xtables_dnat(rules, daddr, proto, publish.host_port) == expected, (published, daddr, proto)
    reached = [daddr for daddr in DESTINATIONS if xtables_dnat(rules, daddr, publish.proto, publish.host_port)]
    assert reached == ([publish.host_address] if publish.host_address else ["192.0.2.7", "198.51.100.3"])
