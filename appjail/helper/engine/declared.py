"""Declared jails: /etc/appjail/jails.d/NAME.toml, read and compared with the jails made from them.

    # /etc/appjail/jails.d/seedbox.toml: root's jail `seedbox`, made at the helper's start and kept
    wireguard = "/etc/appjail/seedbox.conf"   # readable by root only
    publish = ["8080:8080"]

A file holds the options of `run` and of profiles (model.OPTIONS, read with
profiles.table_options) but for `name` (the file's name is the jail's) and
`keep` (a declared jail is always kept), and launch options (no program
comes with it). It, and the directory, must be root's and nobody else's to
write; a file option's file must be root's and nobody else's to read
(tunnelfiles). Each bad file is one sentence, its path first; the others are
made all the same. This module only reads and compares (pure but for
reading the files): bus/keeper.py makes and removes the jails.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ... import model
from ...model import JailSpec, ValidationError, parse_run_options, validate_name
from ... import tunnelfiles
from ...tunnelfiles import read_file_option, read_own_file
from ...profiles import table_options

DECLARED_DIR = Path("/etc/appjail/jails.d")
SUFFIX = ".toml"
OWNER_UID = 0  # declared jails are root's
NOT_DECLARABLE = ("name", "keep")  # the file's name; always kept
DECLARABLE = tuple(option for option in model.OPTIONS if option.key not in NOT_DECLARABLE and not option.launch)


class DeclaredError(ValidationError):
    """A declared jail's file that cannot be used; one sentence, its path first."""


@dataclass(frozen=True)
class Declared:
    """One jail as its file declares it. `digest` changes when the file or a file it names does."""

    name: str
    source: str
    options: dict  # run options (wire form): name, keep and the file's, file options' paths left out
    texts: dict[str, str] = field(repr=False)  # file option -> its file's text (keys): never logged
    digest: str = ""

    def spec(self) -> JailSpec:
        return JailSpec(**self.options)


@dataclass(frozen=True)
class Reading:
    """What a directory declares: the good files' jails by name, and one sentence per bad file (by path)."""

    jails: dict[str, Declared]
    errors: dict[str, str]


@dataclass(frozen=True)
class Plan:
    """What makes the jails agree with their files: names to make, to make again, to remove."""

    create: tuple[str, ...] = ()
    recreate: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


def read_declared(directory: Path = DECLARED_DIR) -> Reading:
    """Every NAME.toml of `directory` (none when it does not exist)."""
    try:
        checked_directory(directory)
        paths = sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
    except FileNotFoundError:
        return Reading({}, {})
    except (OSError, DeclaredError) as exc:
        return Reading({}, {str(directory): str(exc) if isinstance(exc, DeclaredError)
                            else f"{directory}: cannot read it: {exc.strerror}"})
    jails, errors = {}, {}
    for path in paths:
        try:
            declared = read_file(path)
            jails[declared.name] = declared
        except ValidationError as exc:
            errors[str(path)] = str(exc)
    return Reading(jails, errors)


def checked_directory(directory: Path) -> None:
    """The directory must be root's alone to change: whoever may add a file there declares a root jail."""
    st = os.stat(directory)
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise DeclaredError(f"{directory}: owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}: "
                            "declared jails are read only from a directory root alone may change")


def read_file(path: Path) -> Declared:
    """One declared jail, or DeclaredError saying what is wrong with its file."""
    where = str(path)
    try:
        name = validate_name(path.name[:-len(SUFFIX)])
    except ValidationError as exc:
        raise DeclaredError(f"{where}: the file's name is the jail's: {exc}") from None
    try:
        text = read_own_file(where, "declared jail")
    except ValidationError as exc:
        raise DeclaredError(str(exc).removeprefix("declared jail ")) from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeclaredError(f"{where}: not valid TOML: {exc}") from None

    def fail(key: str, problem: str) -> DeclaredError:
        return DeclaredError(f"{where}: {key}: {problem}")

    given = table_options(table, DECLARABLE, fail)
    texts = {}
    for option in DECLARABLE:
        if option.file and option.key in given:
            try:
                texts[option.key] = read_file_option(option, given.pop(option.key), private=True)
            except ValidationError as exc:
                raise fail(option.key, str(exc)) from None
    options = parse_run_options({**given, "name": name, "keep": True})
    try:
        JailSpec(**options)  # what only the whole says (--publish with --vpn)
        for key, value in texts.items():
            tunnelfiles.parse(key, value)
    except ValidationError as exc:
        raise DeclaredError(f"{where}: {exc}") from None
    digest = hashlib.sha256(repr((sorted(options.items()), sorted(texts.items()))).encode()).hexdigest()
    return Declared(name, where, options, texts, digest)


def tunnels(declared: Declared) -> dict:
    """The jail's tunnels, parsed for Engine.create (a file option's key -> its config)."""
    return {key: tunnelfiles.parse(key, text) for key, text in declared.texts.items()}


def plan(declared: dict[str, Declared], made: dict[str, str], present: set[str], broken: set[str]) -> Plan:
    """What to do so that the jails agree with the files.

    declared: the files' jails by name. made: the digest each jail made from
    a file was made from (by name). present: the names of root's jails that
    exist. broken: those whose tunnel is gone (its daemon ended): made again.
    A jail of root's that no file made is never touched.
    """
    create = tuple(name for name in sorted(declared) if name not in present)
    recreate = tuple(name for name in sorted(declared) if name in present
                     and (made.get(name) != declared[name].digest or name in broken))
    remove = tuple(name for name in sorted(made) if name not in declared and name in present)
    return Plan(create, recreate, remove)
