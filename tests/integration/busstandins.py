"""Stand-ins for other services on the tests' private system bus: systemd-resolved
(resolved_standin.py) and firewalld (firewalld_standin.py), whose names standins.conf lets root own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).parent


@contextmanager
def bus_standin(script: str, bus_address: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`python SCRIPT BUS_ADDRESS ARGS...` once it said `ready` (it owns its name), ended after;
    its stdin and stdout are pipes for the test to talk to it by."""
    process = subprocess.Popen([sys.executable, str(HERE / script), bus_address, *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)
