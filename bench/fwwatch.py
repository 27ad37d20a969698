"""The firewall watch: the helper's idle CPU with 50 jails watched, and the time to repair them all.

    sudo .venv/bin/python bench/fwwatch.py [--jails 50] [--idle 30] [--rounds 5]

Keeps N jails (through the CLI, as an unprivileged user), then reads the
helper's CPU time (utime + stime of /proc/PID/stat) over --idle seconds in
which nothing happens: what watching netfilter costs (target ≤ 0.5 % of a
core). Then, --rounds times, flushes the lab host's firewall the way a host
tool does (nftables backend: `nft flush ruleset`; x_tables: iptables-restore of
empty tables) and times, from the flush, the helper's log line saying what it
put back (every jail's rules are back by then), and a jail's first answer from
the lab's server after it. For each backend, one after the other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from benchlab import BACKENDS, backends_argument, helper_in_lab

from appjail.lab.netns import netns_exec_argv

EMPTY_TABLES = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n" \
               "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
               ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
REPAIRED = b"host firewall changed ("


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flush(firewall: str, ns: str) -> None:
    if firewall == "nftables":
        subprocess.run(netns_exec_argv(ns, ["nft", "flush", "ruleset"]), check=True)
    else:
        subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "iptables-legacy-restore"], input=EMPTY_TABLES,
                       text=True, check=True)


def until(predicate, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError("not within 10 s")
        time.sleep(0.005)
    return time.monotonic() - start


def measure(firewall: str, jails: int, idle: float, rounds: int) -> None:
    with helper_in_lab(firewall) as bench:
        lab, helper = bench.lab, bench.helper
        names = [f"w{i}" for i in range(jails)]
        for name in names:
            bench.appjail("run", "--keep", "--name", name, "--dns", lab.DNS_ADDR, "--", "true")
        time.sleep(1)
        before, started = cpu_seconds(helper.proc.pid), time.monotonic()
        time.sleep(idle)
        share = (cpu_seconds(helper.proc.pid) - before) / (time.monotonic() - started)
        url = f"http://{lab.SERVER_ADDR}/"
        repaired, answered = [], []
        for _ in range(rounds):
            logged = helper.log_path.stat().st_size
            flush(firewall, lab.host_ns)
            flushed = time.monotonic()
            repaired.append(until(lambda: REPAIRED in helper.log_path.read_bytes()[logged:]))
            until(lambda: bench.cli.run(bench.user, "run", "--name", names[-1], "--", "curl", "-s", "--max-time",
                                        "0.5", "-o", "/dev/null", url, timeout=10).returncode == 0)
            answered.append(time.monotonic() - flushed)
            time.sleep(0.5)
        for name in names:
            bench.appjail("stop", name)
    print(f"-- firewall backend {firewall}")
    print(f"helper idle CPU with {jails} jails watched   {share * 100:.3f} % of a core over {idle:g} s")
    print(f"flush -> all {jails} jails' rules back     median {statistics.median(repaired) * 1000:.0f} ms  "
          f"(max {max(repaired) * 1000:.0f}, n={rounds})")
    print(f"flush -> a jail's first answer          median {statistics.median(answered) * 1000:.0f} ms  "
          f"(max {max(answered) * 1000:.0f}; includes `appjail run` itself)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jails", type=int, default=50)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=5)
    backends_argument(parser)
    args = parser.parse_args()
    for firewall in args.firewall or BACKENDS:
        measure(firewall, args.jails, args.idle, args.rounds)


if __name__ == "__main__":
    main()
