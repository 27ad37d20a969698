"""XDG desktop entries (the Desktop Entry Specification, 1.5): find an
application's entry by its desktop-file ID, read its [Desktop Entry] group,
split and quote its Exec line, and write an entry.

Only the parts appjail needs: the entries it writes start `appjail run -p
NAME -- %u` and copy what the menu shows (name, icon, categories, MIME types)
from the application's own entry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .model import ValidationError

GROUP = "Desktop Entry"
SUFFIX = ".desktop"
# Field codes that the launcher expands to the files or URLs opened
# (at most one per Exec line); appjail passes them through.
FILE_CODES = frozenset({"%f", "%F", "%u", "%U"})
DEPRECATED_CODES = frozenset({"%d", "%D", "%n", "%N", "%v", "%m"})
# Outside double quotes these make an argument that must be quoted; inside,
# the first four are escaped with a backslash.
QUOTED_ESCAPES = '"`$\\'
RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")
STRING_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
FLATPAK_SYSTEM_EXPORTS = Path("/var/lib/flatpak/exports/share")


class DesktopEntryError(ValidationError):
    """An application entry that cannot be found or used; the message says which and why."""


def data_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME", "~"), ".local", "share")).expanduser()


def user_applications_dir(env: Mapping[str, str]) -> Path:
    """Where a user's own entries live; one here shadows a system entry of the same ID."""
    return data_home(env) / "applications"


def flatpak_exports(env: Mapping[str, str]) -> list[Path]:
    """Where Flatpak exports its applications' entries: the user's installation, then the system's."""
    return [data_home(env) / "flatpak" / "exports" / "share", FLATPAK_SYSTEM_EXPORTS]


def applications_dirs(env: Mapping[str, str]) -> list[Path]:
    """The applications directories in the spec's order of precedence: the user's, then XDG_DATA_DIRS',
    then Flatpak's exports where XDG_DATA_DIRS lacks them (a session started without flatpak's profile
    script, or a tray started before it)."""
    system = [Path(d) for d in (env.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share").split(":") if d]
    system += [d for d in flatpak_exports(env) if d not in system]
    return [user_applications_dir(env), *(d / "applications" for d in system)]


def desktop_file_id(path: Path, base: Path) -> str:
    """`base/kde/konsole.desktop` -> `kde-konsole.desktop`."""
    return str(path.relative_to(base)).replace("/", "-")


def normalise_id(app: str) -> str:
    """`firefox-esr` or `firefox-esr.desktop` -> `firefox-esr.desktop`."""
    return app if app.endswith(SUFFIX) else app + SUFFIX


def find_entry(app: str, env: Mapping[str, str], skip: Callable[[Path], bool] = lambda path: False
               ) -> tuple[Path, str]:
    """(path, desktop-file ID) of APP: a path (anything with a '/'), or an ID looked up in the
    applications directories, the first that has it winning. Entries for which skip() is true
    (appjail's own, shadowing the application's) are passed over."""
    if "/" in app:
        path = Path(app).expanduser()
        if not path.is_file():
            raise DesktopEntryError(f"{app}: no such desktop entry file")
        return path, path.name
    wanted = normalise_id(app)
    searched = applications_dirs(env)
    for base in searched:
        if (found := _find_in(base, wanted, skip)) is not None:
            return found, wanted
    raise DesktopEntryError(f"no application {wanted} in {', '.join(map(str, searched))} "
                            "(give its desktop-file ID, such as firefox-esr, or the path of its .desktop file)")


@dataclass(frozen=True)
class Application:
    """An installed application as a menu lists it."""

    desktop_id: str
    name: str
    icon: str  # a theme icon's name or a file's path; "" for none
    path: Path


def installed_applications(env: Mapping[str, str], skip: Callable[[Path], bool] = lambda path: False
                           ) -> list[Application]:
    """The applications a menu shows, by name: each desktop-file ID once (the first directory that
    has it wins, as in find_entry), without NoDisplay or Hidden ones (Hidden in the user's directory
    hides the ID), entries that are not applications, and those skip() passes over."""
    seen: set[str] = set()
    found = []
    for base in applications_dirs(env):
        for root, _dirs, files in sorted(os.walk(base)):
            for name in sorted(files):
                path = Path(root) / name
                desktop_id = desktop_file_id(path, base)
                if not name.endswith(SUFFIX) or desktop_id in seen or skip(path):
                    continue
                seen.add(desktop_id)
                try:
                    keys = read_entry(path)
                except DesktopEntryError:
                    continue
                if _listed(keys):
                    found.append(Application(desktop_id, unescape_string(keys["Name"]),
                                             unescape_string(keys.get("Icon", "")), path))
    return sorted(found, key=lambda app: (app.name.casefold(), app.desktop_id))


def _listed(keys: Mapping[str, str]) -> bool:
    return (keys.get("Type", "Application") == "Application" and "Name" in keys and "Exec" in keys
            and keys.get("NoDisplay") != "true" and keys.get("Hidden") != "true")


def _find_in(base: Path, wanted: str, skip: Callable[[Path], bool]) -> Path | None:
    """The file of ID `wanted` below `base` (IDs with '-' may name subdirectories)."""
    direct = base / wanted
    if direct.is_file():
        return None if skip(direct) else direct
    for root, _dirs, files in os.walk(base):
        for name in files:
            path = Path(root) / name
            if root != str(base) and desktop_file_id(path, base) == wanted and not skip(path):
                return path
    return None


def read_group(text: str, where: str) -> dict[str, str]:
    """The [Desktop Entry] group's keys and raw values (escapes kept)."""
    keys: dict[str, str] = {}
    group = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            group = stripped[1:-1] if stripped.endswith("]") else None
            continue
        if group == GROUP and "=" in line:
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), value.strip())
    if not keys:
        raise DesktopEntryError(f"{where}: no [{GROUP}] group")
    return keys


def read_entry(path: Path) -> dict[str, str]:
    try:
        return read_group(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise DesktopEntryError(f"{path}: cannot read it: {exc}") from None


def unescape_string(value: str) -> str:
    r"""A string value's escapes (\s \n \t \r \\) resolved."""
    out = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(STRING_ESCAPES.get(following, "\\" + following))
        else:
            out.append(char)
    return "".join(out)


def split_exec(value: str, where: str) -> list[str]:
    """An Exec key's raw value as arguments, field codes left in place as their own words
    (`%u`), `%%` as `%`: the string escapes first, then the Exec quoting rules."""
    text = unescape_string(value)
    words: list[str] = []
    word: list[str] | None = None
    position = 0
    while position < len(text):
        char = text[position]
        if char in " \t\n":
            if word is not None:
                words.append("".join(word))
                word = None
        elif char == '"':
            word = word if word is not None else []
            position += 1
            while position < len(text) and text[position] != '"':
                if text[position] == "\\" and position + 1 < len(text) and text[position + 1] in QUOTED_ESCAPES:
                    position += 1
                word.append(text[position])
                position += 1
            if position >= len(text):
                raise DesktopEntryError(f"{where}: Exec has an unterminated quoted argument")
        else:
            word = word if word is not None else []
            word.append(char)
        position += 1
    if word is not None:
        words.append("".join(word))
    if not words:
        raise DesktopEntryError(f"{where}: Exec is empty")
    return words


def expand_command(words: Sequence[str], entry: Mapping[str, str], path: Path) -> tuple[list[str], str | None]:
    """(the command without the file/URL field code, that code or None). %i, %c and %k are
    expanded as a launcher would, deprecated codes dropped, `%%` made `%`.

    The code must end the line, since appjail adds the files after the command; a Flatpak
    export's `--file-forwarding ... @@u %u @@` becomes plain arguments (the files then reach
    the sandbox only where it may read them anyway)."""
    words = list(words)
    if "--file-forwarding" in words and words[-1:] == ["@@"] and len(words) >= 3 and words[-3] in ("@@u", "@@"):
        words = [w for w in words[:-3] if w != "--file-forwarding"] + [words[-2]]
    command: list[str] = []
    code = None
    for index, word in enumerate(words):
        if word in FILE_CODES:
            if index != len(words) - 1:
                raise DesktopEntryError(f"{path}: Exec has arguments after {word}; "
                                        "appjail can pass the files only at the end")
            code = word
        elif word == "%i":
            command += ["--icon", entry["Icon"]] if entry.get("Icon") else []
        elif word == "%c":
            command.append(unescape_string(entry.get("Name", "")))
        elif word == "%k":
            command.append(str(path))
        elif word not in DEPRECATED_CODES:
            command.append(word.replace("%%", "%"))
    return command, code


def quote_exec_word(word: str) -> str:
    """One argument as the Exec rules want it: `%` doubled, quoted when it holds a reserved character."""
    word = word.replace("%", "%%")
    if word and not RESERVED & set(word):
        return word
    return '"' + "".join("\\" + c if c in QUOTED_ESCAPES else c for c in word) + '"'


def escape_string(value: str) -> str:
    r"""A string value as written in the file: backslash, newline, tab and CR escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def exec_line(words: Sequence[str], code: str | None) -> str:
    """The Exec value for `words` (literal arguments) followed by a field code."""
    quoted = [quote_exec_word(word) for word in words] + ([code] if code else [])
    return escape_string(" ".join(quoted))


def render(keys: Sequence[tuple[str, str]], comment: str) -> str:
    """A desktop entry with one group; values already in the file's form."""
    lines = [f"# {comment}", f"[{GROUP}]", *(f"{key}={value}" for key, value in keys)]
    return "\n".join(lines) + "\n"
