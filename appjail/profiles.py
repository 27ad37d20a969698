"""Profiles: named `run` settings in $XDG_CONFIG_HOME/appjail/profiles.toml.

    [browser]
    command = ["firefox", "--new-instance", "-P", "vpn"]
    vpn = "wg0"
    dns = ["10.64.0.1"]

Keys: command (list of strings, required) and each option of a jail
(model.OPTIONS: name, whose default is the section's name, vpn, dns, keep,
publish, deny, no_lan, wireguard: the path of a file that is read, as the
user, when the profile starts). The CLI (`appjail run -p browser`) and the tray read
the same file. Every mistake is reported with the file, the section and the
key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import model
from .model import ValidationError, validate_name

COMMAND_HINT = 'a list of strings, such as ["firefox", "--new-instance"]'


class ProfileError(ValidationError):
    """A profile file or entry that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Profile:
    name: str
    command: tuple[str, ...]
    options: dict  # run options, validated: name, vpn, dns, ...

    def describe(self) -> str:
        """The command and the jail's way out: `firefox  (wireguard ~/vpn/wg.conf, dns 10.64.0.1)`."""
        extras = [f"{option.label} {self.options[option.key]}" for option in model.OPTIONS
                  if (option.key == "vpn" or option.file) and option.key in self.options]
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

    known = {option.key: option for option in model.OPTIONS}
    options = {}
    for key, value in table.items():
        if key == "command":
            continue
        option = known.get(key)
        if option is None:
            raise fail(key, f"unknown key (known: {', '.join(['command', *known])})")
        if not option.accepts(value):
            raise fail(key, f"expected {option.hint()}")
        try:
            option.check(value)
        except ValidationError as exc:
            raise fail(key, str(exc)) from None
        options[key] = value
    command = table.get("command")
    if not command:
        raise fail("command", "missing: the program to run and its arguments")
    if not (isinstance(command, list) and all(isinstance(word, str) for word in command)):
        raise fail("command", f"expected {COMMAND_HINT}")
    if "name" not in options:
        try:
            options["name"] = validate_name(section)
        except ValidationError as exc:
            raise fail("name", f"{exc} (set name = \"...\" when the section's name is not one)") from None
    return Profile(section, tuple(command), options)
