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
  floor   `unshare -n true`: a bare network namespace, nothing else.
Prints medians and the ratios to the seeds' recipe.
"""

from __future__ import annotations

import argparse
import subprocess

from benchlab import BENCH_USER, REPO, helper_in_lab, interleaved, median_line, median_ms

from appjail.lab import in_netns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with helper_in_lab() as bench:
        lab = bench.lab
        dns = lab.DNS_ADDR
        bench.appjail("run", "--keep", "--name", "warm", "--dns", dns, "--", "true")
        seeds = ["bash", str(REPO / "bench" / "seeds-recipe.sh"), "bench", BENCH_USER, lab.host_uplink_if, dns]
        with in_netns(lab.host_ns):  # children start in the lab's host, as the helper works there
            contenders = {
                "seeds recipe": lambda: subprocess.run(seeds, check=True),
                "appjail run (cold)": lambda: bench.appjail("run", "--name", "cold", "--dns", dns, "--", "true"),
                "appjail run (warm)": lambda: bench.appjail("run", "--name", "warm", "--", "true"),
                "unshare -n (floor)": lambda: subprocess.run(["unshare", "-n", "true"], check=True),
            }
            for fn in contenders.values():  # warm up caches once
                fn()
            times = interleaved(contenders, args.runs)
        bench.appjail("stop", "warm")
    seeds_ms = median_ms(times["seeds recipe"])
    for name, values in times.items():
        print(f"{median_line(name, values)}   ratio to seeds {median_ms(values) / seeds_ms:.2f}")


if __name__ == "__main__":
    main()
