"""Throughput and latency: does a jail cost anything on the wire?

    sudo .venv/bin/python bench/throughput.py [--rounds 7] [--seconds 3]

iperf3 downloads (-R: the uplink sends) from the lab's uplink namespace to
  host      the host namespace directly
  nat       a NAT jail
  vpn       a --vpn jail (through the WireGuard tunnel)
  host-wg   the host namespace through the same tunnel
  wgjail    a --wireguard jail: its own WireGuard interface (the same
            implementation as host-wg's, wireguard-go here) to the same server
  recipe    a namespace made by hand the seeds' way (veth, route, forwarding,
            MASQUERADE, two FORWARD rules): the kernel's own cost of the path
in rounds (host, nat, vpn, host-wg, recipe, host, …), and ping round trips
on the same paths. Prints medians and the ratios jail / host.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from benchlab import engine_in_lab

from appjail.model import JailSpec
from appjail.wgconf import parse

PING_COUNT = 200
WG_JAIL_ADDR = "203.0.113.20"  # the --wireguard jail's peer address at the lab's server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    with ExitStack() as stack:
        lab, engine = stack.enter_context(engine_in_lab())
        engine.start_link_watch()
        nat = engine.create(JailSpec("tnat", dns=(lab.DNS_ADDR,)), 1000)
        vpn = engine.create(JailSpec("tvpn", vpn=lab.wg_ifname, dns=(lab.DNS_ADDR,)), 1000)
        tunnel = engine.create(JailSpec("twg"), 1000, wireguard=parse(lab.wg_peer(WG_JAIL_ADDR)))
        recipe = stack.enter_context(_recipe_jail(lab.host_uplink_if))
        server = lab.popen_in(lab.uplink_ns, ["iperf3", "-s"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        try:
            paths = {  # where the client runs, what it reaches
                "host": ([], lab.SERVER_ADDR),
                "nat": (["ip", "netns", "exec", nat.netns], lab.SERVER_ADDR),
                "vpn": (["ip", "netns", "exec", vpn.netns], lab.WG_SERVER_TUNNEL_ADDR),
                "host-wg": ([], lab.WG_SERVER_TUNNEL_ADDR),
                "wgjail": (["ip", "netns", "exec", tunnel.netns], lab.WG_SERVER_TUNNEL_ADDR),
                "recipe": (["ip", "netns", "exec", recipe], lab.SERVER_ADDR),
            }
            speeds: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, (prefix, target) in paths.items():
                    speeds[name].append(_iperf(prefix, target, args.seconds))
            rtts = {name: _ping(prefix, target) for name, (prefix, target) in paths.items()}
        finally:
            server.terminate()
            server.wait()
    for name in paths:
        print(f"{name:8} throughput median {statistics.median(speeds[name]):8.0f} Mbit/s   "
              f"rtt median {statistics.median(rtts[name]) * 1000:6.0f} µs")
    for jail, host in (("nat", "host"), ("vpn", "host-wg"), ("wgjail", "host-wg"), ("recipe", "host"),
                       ("nat", "recipe")):
        ratio = statistics.median(speeds[jail]) / statistics.median(speeds[host])
        added = (statistics.median(rtts[jail]) - statistics.median(rtts[host])) * 1000
        print(f"{jail} / {host}: throughput ratio {ratio:.2f}, added rtt {added:+.0f} µs")


RECIPE_NS = "sj-throughput"
RECIPE_UP = [
    f"ip netns add {RECIPE_NS}",
    f"ip link add {RECIPE_NS} type veth peer name eth0 netns {RECIPE_NS}",
    f"ip addr add 10.232.1.1/30 dev {RECIPE_NS}",
    f"ip link set {RECIPE_NS} up",
    f"ip -n {RECIPE_NS} addr add 10.232.1.2/30 dev eth0",
    f"ip -n {RECIPE_NS} link set eth0 up",
    f"ip -n {RECIPE_NS} route add default via 10.232.1.1",
    f"sysctl -qw net.ipv4.conf.{RECIPE_NS}.forwarding=1",
    "iptables-legacy -w -t nat -A POSTROUTING -s 10.232.1.0/30 -o {egress} -j MASQUERADE",
    # inserted, ahead of appjail's forwarding guard (which lets through only
    # jails and interfaces the host forwarded on before)
    "iptables-legacy -w -I FORWARD -i " + RECIPE_NS + " -o {egress} -j ACCEPT",
    "iptables-legacy -w -I FORWARD -i {egress} -o " + RECIPE_NS + " -m state --state ESTABLISHED,RELATED -j ACCEPT",
]


@contextmanager
def _recipe_jail(egress: str) -> Iterator[str]:
    """The seeds' jail, by hand, in the lab's host (the calling thread's namespace)."""
    try:
        for command in RECIPE_UP:
            subprocess.run(command.format(egress=egress).split(), check=True)
        yield RECIPE_NS
    finally:
        for command in RECIPE_UP[-3:]:
            undo = command.format(egress=egress).replace(" -A ", " -D ").replace(" -I ", " -D ")
            subprocess.run(undo.split())
        subprocess.run(["ip", "netns", "del", RECIPE_NS])


def _iperf(prefix: list[str], target: str, seconds: int) -> float:
    """Mbit/s received, the uplink sending (retried while the server re-opens between tests)."""
    for _ in range(50):
        out = subprocess.run([*prefix, "iperf3", "-c", target, "-R", "-t", str(seconds), "-J"],
                             capture_output=True, text=True).stdout
        result = json.loads(out)
        if "error" not in result:
            return result["end"]["sum_received"]["bits_per_second"] / 1e6
        time.sleep(0.1)
    raise RuntimeError(f"iperf3 to {target}: {result['error']}")


def _ping(prefix: list[str], target: str) -> list[float]:
    """Round trips in milliseconds."""
    out = subprocess.run([*prefix, "ping", "-n", "-c", str(PING_COUNT), "-i", "0.002", target],
                         capture_output=True, text=True, check=True).stdout
    return [float(ms) for ms in re.findall(r"time=([0-9.]+) ms", out)]


if __name__ == "__main__":
    main()
