"""What the bench scripts share: the lab, an engine or a whole helper inside it,
an unprivileged user, and medians.

Everything runs in the lab's namespaces; the machine's own network namespace
is never touched, and everything made here is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from appjail.helper.engine.engine import Engine
from appjail.lab import Lab, in_netns
from appjail.lab.bus import PrivateSystemBus, polkit_files_installed
from appjail.lab.helper import LabHelper, UserCommand, group_exists, stage_package, temporary_user

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("nftables", "xtables")
MAX_JAILS = 1000  # the scale bench's one user keeps hundreds (the helper's default limit is 32)
PREFIX, VPN = "ajbench", "ajbwg0"
GROUP = "appjail"
BENCH_USER = "ajbench-user"


@contextmanager
def engine_in_lab() -> Iterator[tuple[Lab, Engine]]:
    """The calling thread in the lab's host namespace, with an engine of its own."""
    Lab.cleanup_stale(PREFIX)
    with Lab(prefix=PREFIX, wg_ifname=VPN) as lab, tempfile.TemporaryDirectory() as run_dir:
        with in_netns(lab.host_ns):
            engine = Engine(run_dir=Path(run_dir))
            try:
                yield lab, engine
            finally:
                for jail in engine.list():
                    engine.destroy(jail.name, jail.owner_uid)
                engine.close()


@dataclass
class HelperLab:
    lab: Lab
    helper: LabHelper
    user: str
    cli: UserCommand

    def user_file(self, name: str, text: str) -> str:
        """A file of the user's own in their home (mode 0600), as a provider's config would be."""
        entry = pwd.getpwnam(self.user)
        path = Path(entry.pw_dir) / name
        path.write_text(text)
        path.chmod(0o600)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        return str(path)

    def appjail(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.cli.run(self.user, *args, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"appjail {' '.join(args)}: {result.stderr.strip()}")
        return result


@contextmanager
def helper_in_lab(firewall: str = "auto") -> Iterator[HelperLab]:
    """appjail-helper (with this firewall backend) in the lab behind a private bus and polkitd,
    and a user in group appjail who runs the CLI from a world-readable copy of this checkout."""
    Lab.cleanup_stale(PREFIX)
    with ExitStack() as stack:
        lab = stack.enter_context(Lab(prefix=PREFIX, wg_ifname=VPN))
        if not group_exists(GROUP):
            subprocess.run(["groupadd", "--system", GROUP], check=True)
            stack.callback(subprocess.run, ["groupdel", GROUP], check=True)
        stack.enter_context(polkit_files_installed(REPO / "polkit"))
        bus = stack.enter_context(PrivateSystemBus([REPO / "polkit" / "org.appjail.Helper1.conf"]))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="appjail-bench-")))
        work.chmod(0o755)
        stage_package(work / "code")
        helper = LabHelper(lab.host_ns, bus.address, work / "run", work / "helper.log")
        stack.callback(helper.stop_and_clean)
        helper.start("--firewall", firewall, "--max-jails-per-user", str(MAX_JAILS))
        user = stack.enter_context(temporary_user(BENCH_USER, GROUP))
        cli = UserCommand(bus.address, "/usr/bin/python3", str(work / "code"), lab.host_ns)
        yield HelperLab(lab, helper, user, cli)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(contenders: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Each contender once per round, A B C A B C…, so drifts in machine speed hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    return times


def backends_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--firewall", choices=BACKENDS, action="append",
                        help="measure this backend (repeatable; default: both, one after the other)")


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def median_line(label: str, seconds: list[float], note: str = "") -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"{label:26} median {statistics.median(ms):7.2f} ms   min {ms[0]:7.2f}   "
            f"max {ms[-1]:7.2f}   (n={len(ms)}{note})")
