"""Scale: 200 kept jails, one after another, through the CLI as an unprivileged user.

    sudo .venv/bin/python bench/scale.py [--jails 200]

Records each creation (`appjail run --keep --name sN -- true`), then times
`appjail ls --json` and `appjail inspect --json` with all of them present,
reads the helper's resident memory, stops them all and checks that nothing
named aj-* is left; for each firewall backend, one after the other.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchlab import BACKENDS, backends_argument, helper_in_lab, median_ms, timed

from appjail.helper.kernel.netns import list_namespaces

SAMPLES = 5


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(firewall: str, jails: int) -> None:
    with helper_in_lab(firewall) as bench:
        dns = bench.lab.DNS_ADDR
        names = [f"s{i}" for i in range(jails)]
        creations = [timed(lambda n=n: bench.appjail("run", "--keep", "--name", n, "--dns", dns, "--", "true"))
                     for n in names]
        listed = [timed(lambda: bench.appjail("ls", "--json")) for _ in range(SAMPLES)]
        count = len(json.loads(bench.appjail("ls", "--json").stdout))
        inspected = [timed(lambda: bench.appjail("inspect", "--json", names[-1])) for _ in range(SAMPLES)]
        rss = rss_mib(bench.helper.proc.pid)
        stops = [timed(lambda n=n: bench.appjail("stop", n)) for n in names]
        left = list_namespaces("aj-")
    first, last = creations[0], creations[-1]
    tail = statistics.median(creations[-10:])
    print(f"-- firewall backend {firewall}")
    print(f"jails created            {jails} (ls shows {count})")
    print(f"creation 1st / {jails}th       {first * 1000:7.1f} ms / {last * 1000:7.1f} ms   "
          f"ratio {last / first:.2f}   (median of the first 10 {median_ms(creations[:10]):.1f} ms, "
          f"of the last 10 {tail * 1000:.1f} ms: ratio {tail / statistics.median(creations[:10]):.2f})")
    print(f"appjail ls --json        median {median_ms(listed):7.1f} ms  (n={SAMPLES}, {count} jails)")
    print(f"appjail inspect --json   median {median_ms(inspected):7.1f} ms  (n={SAMPLES})")
    print(f"helper RSS               {rss:7.1f} MiB with {count} jails")
    print(f"appjail stop             median {median_ms(stops):7.1f} ms; aj-* left afterwards: {left or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jails", type=int, default=200)
    backends_argument(parser)
    args = parser.parse_args()
    for firewall in args.firewall or BACKENDS:
        measure(firewall, args.jails)


if __name__ == "__main__":
    main()
