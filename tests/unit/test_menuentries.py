"""`appjail profiles add --from APP [--replace]`, `rm` and the listing: the profile, the menu
entry (valid, its field codes passed through), the shadow of --replace and its removal."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appjail import cli, menuentries
from appjail import desktopentry as de
from appjail.model import ValidationError
from appjail.profiles import load_profiles

APPLICATIONS = Path(__file__).parent / "applications"
FIREFOX = APPLICATIONS / "firefox-esr.desktop"  # a copy of Debian's firefox-esr entry


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A user's data and config directories, the fixtures and the system's entries; a fake
    `appjail` on PATH that writes down the arguments a launcher gives it."""
    system = tmp_path / "system"
    shutil.copytree(APPLICATIONS, system / "applications")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "appjail").write_text(f'#!/bin/sh\nfor a; do printf "%s\\0" "$a"; done > {tmp_path}/argv.new\n'
                                     f'mv {tmp_path}/argv.new {tmp_path}/argv\n')
    (bin_dir / "appjail").chmod(0o755)
    values = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
              "XDG_DATA_DIRS": f"{system}:/usr/share", "PATH": f"{bin_dir}:{os.environ['PATH']}",
              "HOME": str(tmp_path)}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def entry_of(env, name: str) -> dict[str, str]:
    return de.read_entry(Path(env["XDG_DATA_HOME"]) / "applications" / name)


def profiles(env):
    return load_profiles(Path(env["XDG_CONFIG_HOME"]) / "appjail" / "profiles.toml")


def validate(path: Path) -> None:
    result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout


def test_an_entry_from_firefox_esr_is_valid_and_names_the_way_out(env):
    menuentries.add("ff", "firefox-esr", {"vpn": "wg0"}, replace=False, env=env)
    keys = entry_of(env, "appjail-ff.desktop")
    original = de.read_entry(FIREFOX)
    assert keys["Name"] == "Firefox ESR (VPN wg0)"
    assert all(keys[key] == original[key] for key in ("Icon", "Categories", "MimeType"))
    assert keys["Exec"] == f"{env['PATH'].split(':')[0]}/appjail run -p ff -- %u"
    own = Path(env["XDG_DATA_HOME"]) / "appjail" / "browsers" / "ff"  # a copy of its own (test_browsers.py)
    assert profiles(env)["ff"].command == ("/usr/lib/firefox-esr/firefox-esr", "--profile", str(own))
    assert profiles(env)["ff"].options == {"name": "ff", "vpn": "wg0"}
    validate(Path(env["XDG_DATA_HOME"]) / "applications" / "appjail-ff.desktop")


def test_what_the_entry_copies_and_what_it_leaves(env):
    menuentries.add("view", "viewer", {"wireguard": "~/wg.conf"}, replace=False, env=env)
    keys = entry_of(env, "appjail-view.desktop")
    assert keys["Name"] == "Viewer (WireGuard)" and keys["Name[de]"] == "Betrachter (WireGuard)"
    assert "Actions" not in keys  # its actions would start it unjailed
    menuentries.add("flat", "org.example.Flat", {}, replace=False, env=env)
    keys = entry_of(env, "appjail-flat.desktop")
    assert keys["Name"] == "Flat (jail flat)" and "DBusActivatable" not in keys  # or the launcher skips Exec
    validate(Path(env["XDG_DATA_HOME"]) / "applications" / "appjail-view.desktop")


def launched_argv(env, entry: Path, *files: str) -> list[str]:
    """The arguments `gio launch` (as a desktop would) gives the entry's appjail."""
    subprocess.run(["gio", "launch", str(entry), *files], check=True, timeout=30, env=env)
    argv = Path(env["HOME"], "argv")
    for _ in range(100):  # gio returns once it has spawned; the fake writes meanwhile
        if argv.exists():
            break
        subprocess.run(["sleep", "0.1"])
    return argv.read_bytes().decode().split("\0")[:-1]


def test_a_launched_entry_runs_the_profile_with_the_file_after_its_command(env, tmp_path):
    menuentries.add("view", "viewer", {"vpn": "wg0"}, replace=False, env=env)
    opened = tmp_path / "--vpn=eth0 a picture.png"  # looks like an option: stays an argument
    opened.write_bytes(b"")
    argv = launched_argv(env, Path(env["XDG_DATA_HOME"]) / "applications" / "appjail-view.desktop", str(opened))
    assert argv == ["run", "-p", "view", "--", str(opened)]
    options, command = cli.run_request(cli.build_parser().parse_args(argv))
    assert options == {"name": "view", "vpn": "wg0"}
    assert command == ["/opt/My Apps/viewer", "--title", 'say "100%"', "--icon", "viewer", str(opened)]


def test_replace_shadows_the_system_entry_and_rm_restores_it(env, capsys):
    assert cli.main(["profiles", "add", "ff", "--from", "firefox-esr.desktop", "--replace", "--vpn", "wg0"]) == 0
    system_firefox = Path(env["XDG_DATA_DIRS"].split(":")[0]) / "applications" / "firefox-esr.desktop"
    out = capsys.readouterr().out
    assert "Firefox ESR now always runs jailed (VPN wg0)" in out and f"shadows {system_firefox}" in out
    shadow = Path(env["XDG_DATA_HOME"]) / "applications" / "firefox-esr.desktop"
    assert de.find_entry("firefox-esr", env) == (shadow, "firefox-esr.desktop")  # what the desktop starts
    validate(shadow)
    assert cli.main(["profiles"]) == 0
    assert f"menu: {shadow} (shadows {system_firefox})" in capsys.readouterr().out
    assert cli.main(["profiles", "rm", "ff"]) == 0
    assert f"start {system_firefox} again, unjailed" in capsys.readouterr().out
    assert de.find_entry("firefox-esr", env)[0] == system_firefox and "ff" not in profiles(env)


def test_adding_again_rewrites_the_profile_and_moves_its_entry(env):
    assert menuentries.add("ff", "firefox-esr", {"vpn": "wg0"}, replace=True, env=env)[0].startswith("profile ff: ")
    told = menuentries.add("ff", "firefox-esr", {"vpn": "wg1"}, replace=False, env=env)  # its source: the system's
    assert told[0].startswith("profile ff (rewritten): ")
    applications = Path(env["XDG_DATA_HOME"]) / "applications"
    assert not (applications / "firefox-esr.desktop").exists()
    assert entry_of(env, "appjail-ff.desktop")["Name"] == "Firefox ESR (VPN wg1)"
    assert profiles(env)["ff"].options["vpn"] == "wg1"


def test_the_users_own_entries_are_never_overwritten(env):
    applications = Path(env["XDG_DATA_HOME"]) / "applications"
    applications.mkdir(parents=True)
    (applications / "appjail-ff.desktop").write_text("[Desktop Entry]\nName=Mine\n")
    with pytest.raises(ValidationError, match="is your own entry"):
        menuentries.add("ff", "firefox-esr", {}, replace=False, env=env)
    menuentries.add("a", "viewer", {}, replace=True, env=env)
    with pytest.raises(ValidationError, match="menu entry of profile a"):
        menuentries.add("b", str(APPLICATIONS / "viewer.desktop"), {}, replace=True, env=env)
    assert "ff" not in profiles(env) and "b" not in profiles(env)


def test_rm_of_nothing_and_entries_left_without_a_profile(env, capsys):
    with pytest.raises(ValidationError, match="no profile named 'x'"):
        menuentries.remove("x", env)
    menuentries.add("view", "viewer", {}, replace=False, env=env)
    (Path(env["XDG_CONFIG_HOME"]) / "appjail" / "profiles.toml").write_text("")
    assert any("has no profile 'view'" in line for line in menuentries.listing(env))
    assert menuentries.remove("view", env) == [
        f"removed menu entry {Path(env['XDG_DATA_HOME']) / 'applications' / 'appjail-view.desktop'}"]


def test_bad_options_write_nothing(env):
    with pytest.raises(ValidationError, match="invalid interface name"):
        menuentries.add("ff", "firefox-esr", {"vpn": "wg0;x"}, replace=False, env=env)
    with pytest.raises(ValidationError, match="invalid profile name"):
        menuentries.add("f f", "firefox-esr", {}, replace=False, env=env)
    assert not (Path(env["XDG_DATA_HOME"]) / "applications").exists()


def test_an_unknown_application_is_one_line_and_status_125(env, capsys):
    assert cli.main(["profiles", "add", "x", "--from", "no-such-app"]) == cli.EXIT_APPJAIL
    err = capsys.readouterr().err
    assert err.startswith("appjail: no application no-such-app.desktop in ") and err.count("\n") == 1
