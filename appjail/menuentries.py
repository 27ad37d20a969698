"""`appjail profiles add NAME --from APP` and `rm`: a profile made from an
application's desktop entry, and a menu entry of the user's that runs it
jailed (`appjail run -p NAME -- %u`).

The entry is the only record of which profile has one: it carries
X-Appjail-Profile=NAME, so `rm` and the listing find it by scanning the
user's applications directory. With --replace it has the application's own
desktop-file ID, and so shadows the system's entry (the spec's precedence:
the user's directory first): the menu's item and the default handler for the
application's MIME types then start it jailed, until `rm` deletes the shadow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import browsers
from . import desktopentry as de
from .model import ValidationError
from .profiles import Profile, load_profiles, profiles_path, remove_profile, save_profile, validate_profile_name

MARK = "X-Appjail-Profile"
SOURCE = "X-Appjail-Source"
SHADOWS = "X-Appjail-Shadows"  # the desktop-file ID an entry of --replace shadows
# Keys copied from the application's entry (with their translations): what the
# menu shows and which files and links it opens. Not its Actions (they would
# start it unjailed), not DBusActivatable (the launcher would ignore our Exec).
COPIED = ("GenericName", "Comment", "Icon", "Categories", "MimeType", "Keywords", "Terminal", "StartupNotify")


@dataclass(frozen=True)
class MenuEntry:
    path: Path
    profile: str
    source: str  # the application's entry it was made from
    replaces: bool  # it has the application's own desktop-file ID, and so shadows it


def is_ours(path: Path) -> bool:
    try:
        return MARK in de.read_entry(path)
    except de.DesktopEntryError:
        return False


def menu_entries(env: Mapping[str, str]) -> list[MenuEntry]:
    """appjail's entries in the user's applications directory."""
    directory = de.user_applications_dir(env)
    entries = []
    for path in sorted(directory.glob("*" + de.SUFFIX)):
        try:
            keys = de.read_entry(path)
        except de.DesktopEntryError:
            continue
        if MARK in keys:
            entries.append(MenuEntry(path, keys[MARK], keys.get(SOURCE, ""), SHADOWS in keys))
    return entries


def way_out(profile: Profile) -> str:
    """What the menu's name adds: `VPN wg0`, `WireGuard`, `OpenVPN` or `jail NAME`."""
    options = profile.options
    if "vpn" in options:
        return f"VPN {options['vpn']}"
    if "wireguard" in options:
        return "WireGuard"
    if "openvpn" in options:
        return "OpenVPN"
    return f"jail {options['name']}"


def appjail_command() -> str:
    """The appjail the entry starts: the one on PATH now, by its full path (a desktop
    session's PATH may lack /usr/local/bin)."""
    return shutil.which("appjail") or "appjail"


def render_entry(profile: Profile, source: Path, keys: Mapping[str, str], code: str | None,
                 shadows: str | None) -> str:
    suffix = f" ({way_out(profile)})"
    lines = [("Type", "Application"), ("Version", "1.0")]
    lines += [(key, value + suffix) for key, value in keys.items() if key == "Name" or key.startswith("Name[")]
    lines += [(key, value) for key, value in keys.items() if key.split("[", 1)[0] in COPIED]
    lines += [("Exec", de.exec_line([appjail_command(), "run", "-p", profile.name, "--"], code)),
              (MARK, profile.name), (SOURCE, de.escape_string(str(source)))]
    lines += [(SHADOWS, shadows)] if shadows else []
    return de.render(lines, f"written by `appjail profiles add {profile.name}`; "
                            f"`appjail profiles rm {profile.name}` removes it")


def browser_profile_dir(name: str, env: Mapping[str, str]) -> Path:
    """The profile directory of profile `name`'s browser: its own, so that it runs as a copy of
    its own in the jail (browsers.py); kept by `rm`, since it holds the user's data."""
    return de.data_home(env) / "appjail" / "browsers" / name


def add(name: str, app: str, options: dict, replace: bool, env: Mapping[str, str] = os.environ) -> list[str]:
    """Make (or rewrite) profile `name` from APP's entry, and its menu entry. Returns what to tell."""
    validate_profile_name(name)
    source, desktop_id = de.find_entry(app, env, skip=is_ours)
    keys = de.read_entry(source)
    if keys.get("Type", "Application") != "Application" or "Exec" not in keys:
        raise ValidationError(f"{source}: not an application entry with an Exec line")
    command, code = de.expand_command(de.split_exec(keys["Exec"], str(source)), keys, source)
    command += browsers.own_profile_args(command, browser_profile_dir(name, env))
    directory = de.user_applications_dir(env)
    target = directory / (desktop_id if replace else f"appjail-{name}{de.SUFFIX}")
    _check_free(target, name)
    existed = name in load_profiles(_profiles_file(env))
    profile = save_profile(name, {"command": command, **options}, _profiles_file(env))
    for old in menu_entries(env):
        if old.profile == name and old.path != target:
            old.path.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.new")
    staged.write_text(render_entry(profile, source, keys, code, desktop_id if replace else None))
    os.replace(staged, target)
    _update_database(directory)
    told = [f"profile {name}{' (rewritten)' if existed else ''}: {profile.describe()}", f"menu entry: {target}"]
    if replace:
        told.append(f"{keys.get('Name', desktop_id)} now always runs jailed ({way_out(profile)}): from the menu and "
                    f"as the default program for its links and files, this entry shadows {source}; "
                    f"`appjail profiles rm {name}` restores it")
    return told


def _check_free(target: Path, name: str) -> None:
    """Refuse to overwrite an entry that is not this profile's: the user's own, or another profile's."""
    if not target.exists():
        return
    try:
        owner = de.read_entry(target).get(MARK)
    except de.DesktopEntryError:
        owner = None
    if owner is None:
        raise ValidationError(f"{target} is your own entry, not appjail's; move it away first")
    if owner != name:
        raise ValidationError(f"{target} is the menu entry of profile {owner}; "
                              f"`appjail profiles rm {owner}` first")


def remove(name: str, env: Mapping[str, str] = os.environ) -> list[str]:
    """Remove profile `name` and its menu entries. Returns what to tell."""
    told = []
    removed_profile = remove_profile(name, _profiles_file(env))
    if removed_profile:
        told.append(f"removed profile {name}")
    for entry in menu_entries(env):
        if entry.profile == name:
            entry.path.unlink()
            told.append(f"removed menu entry {entry.path}" +
                        (f"; the menu and default handler start {entry.source} again, unjailed"
                         if entry.replaces else ""))
    if told and (kept := browser_profile_dir(name, env)).exists():
        told.append(f"kept its browser's profile {kept} (bookmarks, history); remove it yourself when done")
    if told:
        _update_database(de.user_applications_dir(env))
        return told
    raise ValidationError(f"no profile named {name!r} in {_profiles_file(env)}, and no menu entry of it")


def listing(env: Mapping[str, str] = os.environ) -> list[str]:
    """`appjail profiles`: each profile, with its menu entry if it has one; entries left without a profile."""
    profiles = load_profiles(_profiles_file(env))
    entries = menu_entries(env)
    lines = [] if profiles else [f"no profiles ({_profiles_file(env)} does not exist or is empty)"]
    for name, profile in profiles.items():
        lines.append(f"{name:14} {profile.describe()}")
        lines += [f"{'':14} menu: {entry.path}" + (f" (shadows {entry.source})" if entry.replaces else "")
                  for entry in entries if entry.profile == name]
    lines += [f"menu entry {entry.path} has no profile {entry.profile!r}: `appjail profiles rm {entry.profile}` "
              "removes it" for entry in entries if entry.profile not in profiles]
    return lines


def _profiles_file(env: Mapping[str, str]) -> Path:
    return profiles_path(dict(env))


def _update_database(directory: Path) -> None:
    """Refresh the directory's MIME cache (mimeinfo.cache), where the tool is installed:
    launchers find an entry's MIME types there."""
    if tool := shutil.which("update-desktop-database"):
        subprocess.run([tool, "-q", str(directory)], check=False, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
