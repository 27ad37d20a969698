"""A simulated host and internet in network namespaces, for integration tests and the demo."""

from typing import Any

from appjail.lab.errors import LabError
from appjail.lab.netns import SetnsError, enter_netns, in_netns, netns_exec_argv

__all__ = ["Capture", "DnsTrap", "Lab", "LabError", "SetnsError", "enter_netns", "in_netns", "netns_exec_argv"]


def __getattr__(name: str) -> Any:
    """Load the Lab machinery on first use: `python -m appjail.lab.nsexec`, run for every command
    started in a namespace, then imports only what it needs and starts in a fraction of the time."""
    if name in ("Capture", "DnsTrap", "Lab"):
        from appjail.lab import lab

        return getattr(lab, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
