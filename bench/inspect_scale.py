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
import time

from benchlab import engine_in_lab, median_line

from appjail.helper.bus.policy import Caller
from appjail.helper.bus.supervisor import Supervisor
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
    with engine_in_lab() as (lab, engine):
        for i in range(args.jails):
            engine.create(JailSpec(f"b{i}", dns=(lab.DNS_ADDR,)), 1000)
        target = engine.get(f"b{args.jails - 1}")
        subprocess.run(["ip", "netns", "exec", target.netns, "curl", "-s", "-o", "/dev/null",
                        f"http://{lab.SERVER_ADDR}/bytes/100000"], check=True)
        supervisor = Supervisor(engine, on_added=lambda n: None, on_removed=lambda n: None)
        caller = Caller(1000, 1000, (1000,), ":bench")
        inspected = supervisor.inspect(caller, target.name)
        assert inspected["counters"]["rx_bytes"] >= 100000, inspected
        helper = timed(lambda: supervisor.inspect(caller, target.name), args.runs)
        address = target.addressing.jail_address
        shell = timed(lambda: (
            subprocess.run(["iptables-legacy", "-w", "-L", f"aj-{target.name}", "-v", "-n", "-x"],
                           check=True, capture_output=True),
            subprocess.run(["conntrack", "-L", "-s", address], capture_output=True)), args.runs)
    note = f", {args.jails} jails"
    print(median_line("appjail helper Inspect", helper, note))
    print(median_line("shell recipe", shell, note))
    print(f"ratio helper/shell {statistics.median(helper) / statistics.median(shell):.2f}")


if __name__ == "__main__":
    main()
