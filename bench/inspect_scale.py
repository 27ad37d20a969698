"""Time what the helper does for one `appjail inspect --json` with 200 jails present.

    sudo .venv/bin/python bench/inspect_scale.py [--jails 200] [--runs 50]

Inside a throwaway lab (the machine's own network namespace is not touched):
creates the jails, gives one of them some traffic, then times the helper's
work for Inspect (Supervisor.inspect: the jail's chain counters, its
conntrack entries, its processes) next to the shell recipe for the same
facts (`iptables-legacy -L CHAIN -v -n -x` and `conntrack -L -s ADDR`), both
in this process, and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from appjail.helper.authz import Caller
from appjail.helper.jails import Engine
from appjail.helper.supervisor import Supervisor
from appjail.lab import Lab, in_netns
from appjail.model import JailSpec


def timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jails", type=int, default=200)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    Lab.cleanup_stale("ajbench")
    with Lab(prefix="ajbench", wg_ifname="ajbwg0") as lab, tempfile.TemporaryDirectory() as run_dir:
        with in_netns(lab.host_ns):
            engine = Engine(run_dir=Path(run_dir))
            names = [f"b{i}" for i in range(args.jails)]
            try:
                for name in names:
                    engine.create(JailSpec(name, dns=(lab.DNS_ADDR,)), 1000)
                target = engine.get(names[-1])
                subprocess.run(["ip", "netns", "exec", target.netns, "curl", "-s", "-o", "/dev/null",
                                f"http://{lab.SERVER_ADDR}/bytes/100000"], check=True)
                supervisor = Supervisor(engine, on_added=lambda n: None, on_removed=lambda n: None)
                caller = Caller(":bench", 1000, 1000, (1000,))
                inspected = supervisor.inspect(caller, target.name)
                assert inspected["counters"]["rx_bytes"] >= 100000, inspected
                helper = timed(lambda: supervisor.inspect(caller, target.name), args.runs)
                address = target.addressing.jail_address
                shell = timed(lambda: (
                    subprocess.run(["iptables-legacy", "-w", "-L", f"aj-{target.name}", "-v", "-n", "-x"],
                                   check=True, capture_output=True),
                    subprocess.run(["conntrack", "-L", "-s", address], capture_output=True)), args.runs)
            finally:
                for name in names:
                    if engine.find(name):
                        engine.destroy(name)
                engine.close()
    for label, values in (("appjail helper Inspect", helper), ("shell recipe", shell)):
        ms = sorted(v * 1000 for v in values)
        print(f"{label:24} median {statistics.median(ms):7.2f} ms   min {ms[0]:7.2f}   max {ms[-1]:7.2f}"
              f"   ({args.jails} jails, n={len(ms)})")
    print(f"ratio helper/shell {statistics.median(helper) / statistics.median(shell):.2f}")


if __name__ == "__main__":
    main()
