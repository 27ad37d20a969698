"""`python -m appjail.lab.nsexec NETNS -- COMMAND [ARG...]`: run COMMAND in network namespace NETNS.

Like `ip netns exec`, but only the network namespace changes (see netns.py).
Exit status 125 if the namespace cannot be entered, 126/127 if COMMAND cannot be run.
"""

from __future__ import annotations

import os
import signal
import sys

from appjail.lab.netns import SetnsError, enter_netns

USAGE = "usage: python -m appjail.lab.nsexec NETNS -- COMMAND [ARG...]"


def split_args(args: list[str], usage: str) -> tuple[str, list[str]] | None:
    """(TARGET, COMMAND) of `TARGET -- COMMAND [ARG...]`; None (usage printed) for anything else."""
    if len(args) < 3 or args[1] != "--":
        print(usage, file=sys.stderr)
        return None
    return args[0], args[2:]


def exec_command(tool: str, command: list[str]) -> int:
    """Become COMMAND; if it cannot be run, say so and return 127 (not found) or 126."""
    # Python ignores these at start-up; ignored signals survive exec, so give COMMAND the defaults back.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"{tool}: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126


def main(args: list[str] | None = None) -> int:
    parsed = split_args(sys.argv[1:] if args is None else args, USAGE)
    if parsed is None:
        return 2
    name, command = parsed
    try:
        enter_netns(name)
    except SetnsError as exc:
        print(f"nsexec: {exc}", file=sys.stderr)
        return 125
    return exec_command("nsexec", command)

if __name__ == "__main__":
    sys.exit(main())
