"""Time one jail create+destroy by the engine, inside a throwaway lab.

    sudo .venv/bin/python bench/jail_lifecycle.py [--runs 20]

Prints the median and spread for a NAT jail and a --vpn jail. The machine's
own network namespace is not touched: the engine runs in the lab's host.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from appjail.helper.jails import Engine
from appjail.lab import Lab, in_netns
from appjail.model import JailSpec


def measure(engine: Engine, spec: JailSpec, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        engine.create(spec, 1000)
        engine.destroy(spec.name)
        times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    print(f"{label:28} median {statistics.median(ms):7.1f} ms   min {ms[0]:6.1f}   max {ms[-1]:6.1f}   (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    Lab.cleanup_stale("ajbench")
    with Lab(prefix="ajbench", wg_ifname="ajbwg0") as lab, tempfile.TemporaryDirectory() as run_dir:
        with in_netns(lab.host_ns):
            engine = Engine(run_dir=Path(run_dir))
            measure(engine, JailSpec("warmup", dns=(lab.DNS_ADDR,)), 2)
            report("create+destroy (NAT)", measure(engine, JailSpec("bench", dns=(lab.DNS_ADDR,)), args.runs))
            report("create+destroy (--vpn)", measure(
                engine, JailSpec("bench", vpn=lab.wg_ifname, dns=(lab.DNS_ADDR,)), args.runs))


if __name__ == "__main__":
    main()
