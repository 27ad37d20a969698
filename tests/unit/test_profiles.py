from pathlib import Path

import pytest

from appjail.profiles import ProfileError, load_profiles, profiles_path, remove_profile, save_profile


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    return path


def test_profiles_from_the_design_example(tmp_path):
    path = write(tmp_path, '[browser]\ncommand = ["firefox", "--new-instance", "-P", "vpn"]\n'
                           'vpn = "wg0"\ndns = ["10.64.0.1"]\n\n[web]\nname = "srv"\n'
                           'command = ["python3", "-m", "http.server"]\npublish = ["6000:8000"]\n')
    profiles = load_profiles(path)
    assert list(profiles) == ["browser", "web"]
    assert profiles["browser"].options == {"name": "browser", "vpn": "wg0", "dns": ["10.64.0.1"]}
    assert profiles["web"].command == ("python3", "-m", "http.server")
    assert profiles["web"].options["name"] == "srv"
    assert "vpn wg0" in profiles["browser"].describe()


def test_a_missing_file_has_no_profiles(tmp_path):
    assert load_profiles(tmp_path / "none.toml") == {}


@pytest.mark.parametrize("text,where", [
    ('[b]\nvpn = "wg0"\n', "[b] command: missing"),
    ('[b]\ncommand = "firefox"\n', "[b] command: expected a list"),
    ('[b]\ncommand = ["x"]\nvpn = "wg0;x"\n', "[b] vpn: invalid interface name"),
    ('[b]\ncommand = ["x"]\ndns = ["300.1.1.1"]\n', "[b] dns: invalid DNS server"),
    ('[b]\ncommand = ["x"]\ncolour = "red"\n', "[b] colour: unknown key"),
    ('[b]\ncommand = ["x"]\nkeep = "yes"\n', "[b] keep: expected true or false"),
    ('[Big_Name]\ncommand = ["x"]\n', "[Big_Name] name: invalid jail name"),
    ('browser = 1\n', "'browser' is not a [section]"),
    ('[b\n', "not valid TOML"),
])
def test_mistakes_name_the_file_section_and_key(tmp_path, text, where):
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as failure:
        load_profiles(path)
    assert str(failure.value).startswith(f"{path}: ") and where in str(failure.value)


def test_the_file_lives_in_xdg_config_home():
    assert profiles_path({"XDG_CONFIG_HOME": "/c"}) == Path("/c/appjail/profiles.toml")
    assert profiles_path({"HOME": "/home/u"}) == Path("/home/u/.config/appjail/profiles.toml")


def test_saving_and_removing_a_section_keeps_the_rest_of_the_file(tmp_path):
    path = write(tmp_path, '# my browsers\n[web]\ncommand = ["w"]  # mine\n\n[b]\ncommand = ["old"]\n\n'
                           '[mail]\ncommand = ["m"]\n')
    save_profile("b", {"command": ["a \"quoted\"\\ \u00e9\x7f"], "dns": ["192.0.2.1"], "keep": True}, path)
    profiles = load_profiles(path)
    assert list(profiles) == ["web", "mail", "b"]
    assert profiles["b"].command == ("a \"quoted\"\\ \u00e9\x7f",)
    assert profiles["b"].options == {"name": "b", "dns": ["192.0.2.1"], "keep": True}
    assert path.read_text().startswith('# my browsers\n[web]\ncommand = ["w"]  # mine\n')
    assert remove_profile("web", path) and not remove_profile("web", path)
    assert list(load_profiles(path)) == ["mail", "b"] and "# my browsers" in path.read_text()


def test_a_profile_that_would_not_load_is_not_saved(tmp_path):
    path = write(tmp_path, '[web]\ncommand = ["w"]\n')
    with pytest.raises(ProfileError, match="vpn: invalid interface name"):
        save_profile("b", {"command": ["x"], "vpn": "a b"}, path)
    with pytest.raises(ProfileError, match="invalid profile name"):
        save_profile("a]b", {"command": ["x"]}, path)
    assert path.read_text() == '[web]\ncommand = ["w"]\n'
