"""The desktop-entry format: finding an entry by desktop-file ID, splitting and quoting Exec."""

import shutil
from pathlib import Path

import pytest

from appjail import desktopentry as de

APPLICATIONS = Path(__file__).parent / "applications"


@pytest.fixture
def dirs(tmp_path):
    """A user's data dir (empty) before two system ones: the fixtures', then an empty one."""
    system = tmp_path / "system"
    shutil.copytree(APPLICATIONS, system / "applications")
    return {"XDG_DATA_HOME": str(tmp_path / "home"), "XDG_DATA_DIRS": f"{system}:{tmp_path / 'other'}"}


def test_ids_are_found_with_or_without_suffix_and_in_subdirectories(dirs):
    system = Path(dirs["XDG_DATA_DIRS"].split(":")[0]) / "applications"
    assert de.find_entry("viewer", dirs) == (system / "viewer.desktop", "viewer.desktop")
    assert de.find_entry("viewer.desktop", dirs)[0] == system / "viewer.desktop"
    assert de.find_entry("kde-konsole", dirs) == (system / "kde" / "konsole.desktop", "kde-konsole.desktop")
    with pytest.raises(de.DesktopEntryError, match="no application konsole.desktop"):
        de.find_entry("konsole", dirs)


def test_a_path_is_taken_as_it_is(dirs):
    path = APPLICATIONS / "kde" / "konsole.desktop"
    assert de.find_entry(str(path), dirs) == (path, "konsole.desktop")
    with pytest.raises(de.DesktopEntryError, match="no such desktop entry file"):
        de.find_entry(str(APPLICATIONS / "none.desktop"), dirs)


def test_the_users_directory_comes_first_and_skipped_entries_are_passed_over(dirs):
    home = Path(dirs["XDG_DATA_HOME"]) / "applications"
    home.mkdir(parents=True)
    (home / "viewer.desktop").write_text("[Desktop Entry]\nName=Mine\n")
    assert de.find_entry("viewer", dirs)[0] == home / "viewer.desktop"
    assert de.find_entry("viewer", dirs, skip=lambda path: path.parent == home)[0] != home / "viewer.desktop"


def test_default_data_dirs_follow_the_spec_then_flatpaks_exports():
    assert de.applications_dirs({"HOME": "/home/u"}) == [
        Path("/home/u/.local/share/applications"), Path("/usr/local/share/applications"),
        Path("/usr/share/applications"), Path("/home/u/.local/share/flatpak/exports/share/applications"),
        Path("/var/lib/flatpak/exports/share/applications")]
    with_flatpak = {"HOME": "/home/u", "XDG_DATA_DIRS": "/var/lib/flatpak/exports/share:/usr/share"}
    assert de.applications_dirs(with_flatpak)[1:] == [
        Path("/var/lib/flatpak/exports/share/applications"), Path("/usr/share/applications"),
        Path("/home/u/.local/share/flatpak/exports/share/applications")], "each once, where the session has it"


@pytest.fixture
def flatpak_system(tmp_path, monkeypatch):
    """The system's Flatpak exports, with the fixtures' Flatpak app, where XDG_DATA_DIRS does not say."""
    exports = tmp_path / "flatpak" / "exports" / "share"
    (exports / "applications").mkdir(parents=True)
    shutil.copy(APPLICATIONS / "org.example.Flat.desktop", exports / "applications")
    monkeypatch.setattr(de, "FLATPAK_SYSTEM_EXPORTS", exports)
    return exports


def test_installed_applications_are_listed_once_by_name_with_flatpaks_hidden_ones_left_out(dirs, flatpak_system):
    system = Path(dirs["XDG_DATA_DIRS"].split(":")[0]) / "applications"
    (system / "org.example.Flat.desktop").unlink()  # only in Flatpak's exports
    (system / "settings.desktop").write_text("[Desktop Entry]\nType=Application\nName=Settings\nExec=s\n"
                                             "NoDisplay=true\n")
    (system / "link.desktop").write_text("[Desktop Entry]\nType=Link\nName=Link\nURL=http://192.0.2.1/\n")
    home = Path(dirs["XDG_DATA_HOME"]) / "applications"
    home.mkdir(parents=True)
    (home / "chromium.desktop").write_text("[Desktop Entry]\nType=Application\nName=Chromium\nExec=c\n"
                                           "Hidden=true\n")
    (home / "viewer.desktop").write_text("[Desktop Entry]\nType=Application\nName=My viewer\nExec=v\n")
    apps = de.installed_applications(dirs)
    assert [(a.name, a.desktop_id) for a in apps] == [
        ("Firefox ESR", "firefox-esr.desktop"), ("Flat", "org.example.Flat.desktop"),
        ("Konsole", "kde-konsole.desktop"), ("My viewer", "viewer.desktop")]
    assert apps[1].icon == "org.example.Flat" and apps[1].path.parent == flatpak_system / "applications"
    skipped = de.installed_applications(dirs, skip=lambda path: path.parent == home)
    assert ("Viewer", "viewer.desktop") in [(a.name, a.desktop_id) for a in skipped], "the system's, not the skipped"
    assert de.find_entry("org.example.Flat", dirs)[0] == flatpak_system / "applications" / "org.example.Flat.desktop"


def test_exec_is_split_by_the_spec_quoting_rules():
    keys = de.read_entry(APPLICATIONS / "viewer.desktop")
    words = de.split_exec(keys["Exec"], "viewer")
    assert words == ["/opt/My Apps/viewer", "--title", 'say "100%%"', "%i", "%F"]
    command, code = de.expand_command(words, keys, APPLICATIONS / "viewer.desktop")
    assert command == ["/opt/My Apps/viewer", "--title", 'say "100%"', "--icon", "viewer"] and code == "%F"


def test_a_flatpak_exports_file_forwarding_becomes_plain_arguments():
    path = APPLICATIONS / "org.example.Flat.desktop"
    keys = de.read_entry(path)
    command, code = de.expand_command(de.split_exec(keys["Exec"], "flat"), keys, path)
    assert command == ["/usr/bin/flatpak", "run", "--branch=stable", "--arch=x86_64", "--command=flat",
                       "org.example.Flat"] and code == "%u"


def test_a_field_code_before_other_arguments_is_refused():
    with pytest.raises(de.DesktopEntryError, match="arguments after %U"):
        de.expand_command(["app", "%U", "--late"], {}, Path("app.desktop"))


@pytest.mark.parametrize("word", ["plain", "two words", 'quote"d', "back\\slash", "$HOME", "100%", "`x`",
                                  "tab\there", "new\nline", ""])
def test_quoted_words_split_back_to_themselves(word):
    line = de.exec_line(["/usr/bin/appjail", word], "%u")
    assert de.split_exec(line, "test") == ["/usr/bin/appjail", word.replace("%", "%%"), "%u"]
    command, code = de.expand_command(de.split_exec(line, "test"), {}, Path("t.desktop"))
    assert command == ["/usr/bin/appjail", word] and code == "%u"


def test_an_unterminated_quote_is_refused():
    with pytest.raises(de.DesktopEntryError, match="unterminated"):
        de.split_exec('"app --x', "broken")
