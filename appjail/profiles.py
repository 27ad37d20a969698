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
from collections.abc import Callable
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
    return _profiles(path, _parse(path, _read_text(path)))


def _profiles(path: Path, data: dict) -> dict[str, Profile]:
    profiles = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ProfileError(f"{path}: {section!r} is not a [section] of settings")
        profiles[section] = _profile(path, section, table)
    return profiles


def _profile(path: Path, section: str, table: dict) -> Profile:
    def fail(key: str, problem: str) -> ProfileError:
        return ProfileError(f"{path}: [{section}] {key}: {problem}")

    options = table_options({key: value for key, value in table.items() if key != "command"},
                            model.OPTIONS, fail, ("command",))
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


def table_options(table: dict, options: tuple[model.Option, ...], fail: Callable[[str, str], Exception],
                  other_keys: tuple[str, ...] = ()) -> dict:
    """The jail options of a TOML table, each checked as `run` checks it (the wire form, for
    parse_run_options); fail(key, problem) makes the error for the first wrong key. Profiles and
    declared jails (helper/engine/declared.py) read their tables with it; other_keys are named
    beside the options when a key is unknown."""
    known = {option.key: option for option in options}
    for key, value in table.items():
        option = known.get(key)
        if option is None:
            raise fail(key, f"unknown key (known: {', '.join([*other_keys, *known])})")
        if not option.accepts(value):
            raise fail(key, f"expected {option.hint()}")
        try:
            option.check(value)
        except ValidationError as exc:
            raise fail(key, str(exc)) from None
    return dict(table)


# Writing: `appjail profiles add` and `rm` change one section and keep the
# rest of the file (comments, order, other sections) as the user wrote it.

BARE_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def validate_profile_name(name: str) -> str:
    """A name `profiles add` writes: a bare TOML key, fit for a file name and an Exec line."""
    if not (0 < len(name) <= 64 and set(name) <= BARE_KEY_CHARS and name[0] != "-"):
        raise ProfileError(f"invalid profile name {name!r}: use up to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
    return name


def save_profile(name: str, table: dict, path: Path | None = None) -> Profile:
    """Write section [name] (replacing one of that name); the table is checked first, as a
    profile of the file would be."""
    path = path or profiles_path()
    validate_profile_name(name)
    profile = _profile(path, name, table)
    text = _without_section(_read_text(path), name)
    section = "\n".join([f"[{name}]", *(f"{key} = {_toml_value(value)}" for key, value in table.items())])
    _write_checked(path, (text.rstrip("\n") + "\n\n" if text.strip() else "") + section + "\n")
    return profile


def remove_profile(name: str, path: Path | None = None) -> bool:
    """Remove section [name]; False when there was none."""
    path = path or profiles_path()
    text = _read_text(path)
    if name not in _profiles(path, _parse(path, text)):
        return False
    _write_checked(path, _without_section(text, name))
    return True


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read it: {exc}") from None


def _parse(path: Path, text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None


def _without_section(text: str, name: str) -> str:
    """`text` without the lines of section [name], from its header to the next header."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            try:
                inside = list(tomllib.loads(stripped.split("#", 1)[0])) == [name]
            except tomllib.TOMLDecodeError:
                inside = False
        if not inside:
            kept.append(line)
    return "".join(kept)


def _write_checked(path: Path, text: str) -> None:
    """Replace the file atomically, after checking the new text reads back as profiles."""
    _profiles(path, _parse(path, text))
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    os.replace(staged, path)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                             for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise ProfileError(f"cannot write {value!r} to a profile")


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
