"""A call's arguments as typed values, parsed once where they arrive (the service) and passed on.

Nothing behind the service looks at a raw dictionary again: the Supervisor
gets a RunRequest whose options are checked, whose tunnel files are parsed
(keys and all: never kept, never shown) and whose program is a LaunchSpec.
"""

from __future__ import annotations

from dataclasses import dataclass

from ... import tunnelfiles
from ...model import TUNNEL_OPTIONS, LaunchSpec, launch_settings, parse_run_options
from ...ovpnconf import OpenVpnConfig
from ...wgconf import WireGuardConfig



@dataclass(frozen=True)
class RunRequest:
    """Run's arguments: the jail's options (checked, wire form), its tunnel, this program's settings."""

    options: dict  # JailSpec(**options) makes the jail; a program joining it is compared on them
    tunnels: dict[str, WireGuardConfig | OpenVpnConfig]  # by option key: the parsed file
    settings: dict  # this program's launch options (its mount namespace), not the jail's
    program: LaunchSpec

    @property
    def name(self) -> str:
        return self.options["name"]


def parse_run(options: object, program: LaunchSpec) -> RunRequest:
    """Run's options and program checked once, field by field (ValidationError says what is wrong)."""
    options = parse_run_options(options)
    tunnels = {key: tunnelfiles.parse(key, options.pop(key)) for key in TUNNEL_OPTIONS if key in options}
    settings = launch_settings(options)
    return RunRequest(options, tunnels, settings, program)
