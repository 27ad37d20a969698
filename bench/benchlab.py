"""What the bench scripts share: an engine inside a throwaway lab, and a median line."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appjail.helper.jails import Engine
from appjail.lab import Lab, in_netns

PREFIX, VPN = "ajbench", "ajbwg0"


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
                    engine.destroy(jail.name)
                engine.close()


def median_line(label: str, seconds: list[float], note: str = "") -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"{label:26} median {statistics.median(ms):7.2f} ms   min {ms[0]:7.2f}   "
            f"max {ms[-1]:7.2f}   (n={len(ms)}{note})")
