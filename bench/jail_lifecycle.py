"""Time one jail create+destroy by the engine, inside a throwaway lab.

    sudo .venv/bin/python bench/jail_lifecycle.py [--runs 20]

Prints the median and spread for a NAT jail and a --vpn jail, next to the
shell recipe such jails are usually built with (ip netns / ip link / ip addr
/ iptables commands, see SHELL_UP and SHELL_DOWN), run in the same process
and namespace, and the ratio between the two. The machine's own network
namespace is not touched: everything runs in the lab's host.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from benchlab import engine_in_lab, median_line

from appjail.helper.engine.engine import Engine
from appjail.model import JailSpec


# The usual hand-made jail: namespace, veth, addresses, routes, NAT and
# forwarding rules; {vpn} is the egress interface of the --vpn variant.
SHELL_UP = [
    "ip netns add aj-shell",
    "ip link add aj-shell type veth peer name eth0 netns aj-shell",
    "ip addr add 10.231.255.1/30 dev aj-shell",
    "ip link set aj-shell up",
    "ip -n aj-shell addr add 10.231.255.2/30 dev eth0",
    "ip -n aj-shell link set eth0 up",
    "ip -n aj-shell link set lo up",
    "ip -n aj-shell route add default via 10.231.255.1",
    "iptables-legacy -w -I FORWARD -i aj-shell -o {vpn} -j ACCEPT",
    "iptables-legacy -w -I FORWARD -o aj-shell -m state --state ESTABLISHED,RELATED -j ACCEPT",
    "iptables-legacy -w -t nat -A POSTROUTING -s 10.231.255.0/30 -o {vpn} -j MASQUERADE",
]
SHELL_DOWN = [
    "iptables-legacy -w -t nat -D POSTROUTING -s 10.231.255.0/30 -o {vpn} -j MASQUERADE",
    "iptables-legacy -w -D FORWARD -o aj-shell -m state --state ESTABLISHED,RELATED -j ACCEPT",
    "iptables-legacy -w -D FORWARD -i aj-shell -o {vpn} -j ACCEPT",
    "ip link del aj-shell",
    "ip netns del aj-shell",
]


def measure_shell(egress: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for command in SHELL_UP + SHELL_DOWN:
            subprocess.run(command.format(vpn=egress).split(), check=True)
        times.append(time.perf_counter() - start)
    return times


def measure(engine: Engine, spec: JailSpec, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        engine.create(spec, 1000)
        engine.destroy(spec.name)
        times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float], shell_times: list[float]) -> None:
    print(median_line(f"{label} appjail", times))
    print(median_line(f"{label} shell recipe", shell_times))
    print(f"{label} ratio appjail/shell {statistics.median(times) / statistics.median(shell_times):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with engine_in_lab() as (lab, engine):
        measure(engine, JailSpec("warmup", dns=(lab.DNS_ADDR,)), 2)
        report("NAT",
               measure(engine, JailSpec("bench", dns=(lab.DNS_ADDR,)), args.runs),
               measure_shell(lab.host_uplink_if, args.runs))
        report("--vpn",
               measure(engine, JailSpec("bench", vpn=lab.wg_ifname, dns=(lab.DNS_ADDR,)), args.runs),
               measure_shell(lab.wg_ifname, args.runs))


if __name__ == "__main__":
    main()
