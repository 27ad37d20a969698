"""Start-up: a jailed `true`, from nothing to nothing, against the seeds' recipe.

    sudo .venv/bin/python bench/startup.py [--runs 30]

Side by side in one run (A B C D, A B C D, …), as an unprivileged user where
the contender has one:
  seeds   bench/seeds-recipe.sh: namespace, veth, addresses, route,
          forwarding, MASQUERADE, FORWARD rules, resolv.conf, `ip netns exec
          … runuser -u USER -- true`, full teardown;
  cold    `appjail run -- true`: new jail, launch, teardown (the CLI returns
          once the jail is gone);
  warm    `appjail run --name warm -- true`: into a kept jail;
  wg      `appjail run --wireguard FILE -- true`: a new jail with its own
          WireGuard interface (wireguard-go here), launch, teardown;
  floor   `unshare -n true`: a bare network namespace, nothing else.
Prints medians and the ratios to the seeds' recipe, for each firewall backend
(a lab and helper of its own, one after the other), then the two side by side.
"""

from __future__ import annotations

import argparse
import subprocess

from benchlab import (BACKENDS, BENCH_USER, REPO, backends_argument, helper_in_lab, interleaved, median_line,
                      median_ms)

from appjail.lab import in_netns


def measure(firewall: str, runs: int) -> dict[str, list[float]]:
    with helper_in_lab(firewall) as bench:
        lab = bench.lab
        dns = lab.DNS_ADDR
        bench.appjail("run", "--keep", "--name", "warm", "--dns", dns, "--", "true")
        seeds = ["bash", str(REPO / "bench" / "seeds-recipe.sh"), "bench", BENCH_USER, lab.host_uplink_if, dns]
        peer = bench.user_file("wg.conf", lab.wg_peer("203.0.113.30"))
        with in_netns(lab.host_ns):  # children start in the lab's host, as the helper works there
            contenders = {
                "seeds recipe": lambda: subprocess.run(seeds, check=True),
                "appjail run (cold)": lambda: bench.appjail("run", "--name", "cold", "--dns", dns, "--", "true"),
                "appjail run (warm)": lambda: bench.appjail("run", "--name", "warm", "--", "true"),
                "appjail run --wireguard": lambda: bench.appjail("run", "--name", "wg", "--wireguard", peer,
                                                                 "--", "true"),
                "unshare -n (floor)": lambda: subprocess.run(["unshare", "-n", "true"], check=True),
            }
            for fn in contenders.values():  # warm up caches once
                fn()
            times = interleaved(contenders, runs)
        bench.appjail("stop", "warm")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    backends_argument(parser)
    args = parser.parse_args()
    results = {}
    for firewall in args.firewall or BACKENDS:
        times = results[firewall] = measure(firewall, args.runs)
        seeds_ms = median_ms(times["seeds recipe"])
        print(f"-- firewall backend {firewall}")
        for name, values in times.items():
            print(f"{median_line(name, values)}   ratio to seeds {median_ms(values) / seeds_ms:.2f}")
    if len(results) > 1:
        print("-- side by side (median ms; ratio to the seeds' recipe of the same run)")
        for name in ("appjail run (cold)", "appjail run (warm)", "appjail run --wireguard"):
            cells = [f"{firewall} {median_ms(times[name]):6.2f} ({median_ms(times[name]) / median_ms(times['seeds recipe']):.2f})"
                     for firewall, times in results.items()]
            print(f"{name:20} " + "   ".join(cells))


if __name__ == "__main__":
    main()
