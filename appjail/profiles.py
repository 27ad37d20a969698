"""Profiles: named `run` settings in $XDG_CONFIG_HOME/appjail/profiles.toml.

    [browser]
    command = ["firefox", "--new-instance", "-P", "vpn"]
    vpn = "wg0"
    dns = ["10.64.0.1"]

Keys: command (list of strings, required), name (jail name; default: the
section's name), vpn, dns, publish, deny, no_lan, keep. The CLI (`appjail
run -p browser`) and the tray read the same file. Every mistake is reported
with the file, the section and the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .model import ValidationError, parse_run_options, validate_name

# key -> (type, what a user should write)
KEYS: dict[str, tuple[type, str]] = {
    "command": (list, "a list of strings, such as [\"firefox\", \"--new-instance\"]"),
    "name": (str, "a jail name"),
    "vpn": (str, "an interface name"),
    "dns": (list, "a list of addresses"),
    "publish": (list, "a list such as [\"6000:8080\"]"),
    "deny": (list, "a list of CIDRs"),
    "no_lan": (bool, "true or false"),
    "keep": (bool, "true or false"),
}


class ProfileError(ValidationError):
    """A profile file or entry that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Profile:
    name: str
    command: tuple[str, ...]
    options: dict  # run options, validated: name, vpn, dns, ...

    def describe(self) -> str:
        extras = [f"vpn {self.options['vpn']}"] if "vpn" in self.options else []
        extras += [f"dns {','.join(self.options['dns'])}"] if "dns" in self.options else []
        return " ".join(self.command) + (f"  ({', '.join(extras)})" if extras else "")


def profiles_path(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    return Path(os.path.expanduser(base)) / "appjail" / "profiles.toml"


def load_profiles(path: Path | None = None) -> dict[str, Profile]:
    """Every profile of the file (none when it does not exist)."""
    path = path or profiles_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    profiles = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ProfileError(f"{path}: {section!r} is not a [section] of settings")
        profiles[section] = _profile(path, section, table)
    return profiles


def _profile(path: Path, section: str, table: dict) -> Profile:
    def fail(key: str, problem: str) -> ProfileError:
        return ProfileError(f"{path}: [{section}] {key}: {problem}")

    for key, value in table.items():
        if key not in KEYS:
            raise fail(key, f"unknown key (known: {', '.join(KEYS)})")
        expected, example = KEYS[key]
        if not isinstance(value, expected):
            raise fail(key, f"expected {example}")
        if expected is list and not all(isinstance(v, str) for v in value):
            raise fail(key, f"expected {example}")
    command = table.get("command")
    if not command:
        raise fail("command", "missing: the program to run and its arguments")
    options = {key: value for key, value in table.items() if key != "command"}
    options["name"] = table.get("name", section)
    try:
        validate_name(options["name"])
    except ValidationError as exc:
        raise fail("name", str(exc) + " (set name = \"...\" when the section's name is not one)") from None
    for key in options:
        try:
            parse_run_options({"name": options["name"], key: options[key]})
        except ValidationError as exc:
            raise fail(key, str(exc)) from None
    return Profile(section, tuple(command), options)
