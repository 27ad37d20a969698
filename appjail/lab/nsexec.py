"""`python -m appjail.lab.nsexec NETNS -- COMMAND [ARG...]`: run COMMAND in network namespace NETNS.

Like `ip netns exec`, but only the network namespace changes (see netns.py).
Exit status 125 if the namespace cannot be entered, 126/127 if COMMAND cannot be run.
"""

from __future__ import annotations

import os
import signal
import sys

from appjail.lab.netns import NetnsError, enter_netns

USAGE = "usage: python -m appjail.lab.nsexec NETNS -- COMMAND [ARG...]"


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if len(args) < 3 or args[1] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    name, _, *command = args
    try:
        enter_netns(name)
    except NetnsError as exc:
        print(f"nsexec: {exc}", file=sys.stderr)
        return 125
    # Python ignores these at start-up; ignored signals survive exec, so give COMMAND the defaults back.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"nsexec: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126


if __name__ == "__main__":
    sys.exit(main())
