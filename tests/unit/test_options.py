"""One table of a jail's options (model.OPTIONS): everything else is derived from it."""

import json
import types

import pytest

from appjail import cli, model, report
from appjail.helper.engine.state import READY, JailRecord
from appjail.model import (LIST, JailSpec, Option, Publish, ValidationError, disagreements, launch_settings,
                           parse_run_options)
from appjail.profiles import ProfileError, load_profiles


def run_help(capsys) -> str:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--help"])
    return capsys.readouterr().out


def profile(tmp_path, lines: str) -> dict:
    path = tmp_path / "profiles.toml"
    path.write_text('[b]\ncommand = ["x"]\n' + lines)
    return load_profiles(path)["b"].options


def test_jailspec_the_state_records_and_json_have_exactly_the_tables_options():
    keys = tuple(option.key for option in model.spec_options())
    assert keys == tuple(option.key for option in model.OPTIONS if not (option.file or option.launch))
    assert JailSpec._fields == keys
    assert JailSpec("web")._replace(name=None) == tuple(option.default for option in model.spec_options())
    assert tuple(model.wire_options(JailSpec("web"))) == keys
    assert set(keys) <= set(report.normalised({"name": "web"}))


def test_every_option_is_a_run_flag_and_a_profile_key(capsys, tmp_path):
    text = run_help(capsys)
    for option in model.OPTIONS:
        assert f"{option.flags[-1]} {option.metavar or ''}".strip() in text
        value = True if option.kind == model.FLAG else [option.example] if option.kind == LIST else option.example
        assert profile(tmp_path, f"{option.key} = {json.dumps(value)}\n")[option.key] == value  # JSON's are TOML's


def validate_colours(values: object) -> tuple[str, ...]:
    if not all(value in ("red", "blue") for value in values):
        raise ValidationError(f"invalid colour in {values!r}: red or blue")
    return tuple(values)


EXTRA = Option("colour", ("--colour",), LIST, "a test-only option", metavar="COLOUR", example="red",
               validate=validate_colours, default=())


@pytest.fixture
def extra_option(monkeypatch):
    """The table with one more option, as issue 13's --wireguard will add one."""
    monkeypatch.setattr(model, "OPTIONS", (*model.OPTIONS, EXTRA))


def test_an_option_added_to_the_table_is_a_run_flag_of_both_parsers(extra_option, capsys):
    assert "--colour COLOUR" in run_help(capsys) and "a test-only option (repeatable)" in run_help(capsys)
    argv = ["run", "--colour", "red", "--colour=blue", "--", "ls"]
    assert vars(cli.quick_run_args(argv)) == vars(cli.build_parser().parse_args(argv))
    assert cli.quick_run_args(argv).colour == ["red", "blue"]
    assert cli.run_request(cli.quick_run_args(argv))[0] == {"name": "ls", "colour": ["red", "blue"]}
    assert cli.main(["run", "--colour", "green", "ls"]) == cli.EXIT_APPJAIL
    assert capsys.readouterr().err == "appjail: invalid colour in ['green']: red or blue\n"


def test_an_option_added_to_the_table_is_a_profile_key(extra_option, tmp_path):
    assert profile(tmp_path, 'colour = ["blue"]\n') == {"name": "b", "colour": ["blue"]}
    with pytest.raises(ProfileError, match=r'\[b\] colour: expected a list such as \["red"\]'):
        profile(tmp_path, 'colour = "red"\n')
    with pytest.raises(ProfileError, match=r"\[b\] colour: invalid colour"):
        profile(tmp_path, 'colour = ["green"]\n')


def test_an_option_added_to_the_table_is_a_bus_option_a_join_check_and_a_json_field(extra_option):
    assert parse_run_options({"name": "web", "colour": ["red"]}) == {"name": "web", "colour": ["red"]}
    for bad in ("red", ["green"], [1]):
        with pytest.raises(ValidationError):
            parse_run_options({"name": "web", "colour": bad})
    jail = types.SimpleNamespace(**JailSpec("web")._asdict(), colour=("blue",))
    assert disagreements({"colour": ["red"]}, jail) == ["colour blue"]
    assert disagreements({"colour": ["blue"], "name": "web"}, jail) == []
    assert model.wire_options(jail)["colour"] == ["blue"]
    assert report.normalised({"name": "web"})["colour"] == []


def test_a_launch_option_is_one_programs_not_the_jails():
    options = parse_run_options({"name": "web", "no_system_bus": True})
    assert launch_settings(options) == {"no_system_bus": True} and options == {"name": "web"}
    assert launch_settings({"name": "web"}) == {"no_system_bus": False}
    assert "no_system_bus" not in JailSpec._fields + tuple(report.normalised({"name": "web"}))
    with pytest.raises(ValidationError, match="invalid no_system_bus: expected true or false"):
        parse_run_options({"name": "web", "no_system_bus": "yes"})


def test_a_joining_program_must_agree_on_every_option_but_the_name():
    jail = JailSpec("web", vpn="wg0", dns=("192.0.2.53",), keep=True, deny=("192.0.2.0/24",), no_lan=True)
    given = {"name": "web", "vpn": "wg1", "dns": ["192.0.2.54"], "keep": False, "publish": ["6000:80"],
             "deny": [], "no_lan": False}
    assert disagreements(given, jail) == ["vpn wg0", "dns 192.0.2.53", "keep yes", "publish none",
                                          "deny 192.0.2.0/24", "no-lan yes"]
    same = {"vpn": "wg0", "dns": ["192.0.2.53", "192.0.2.53"], "keep": True, "deny": ["192.0.2.0/24"]}
    assert disagreements(same, jail) == [] and disagreements({}, jail) == []


@pytest.mark.parametrize("options,message", [
    ({}, "missing option name"), ({"name": "web", "keep": "yes"}, "invalid keep: expected true or false"),
    ({"name": "web", "vpn": ["wg0"]}, 'invalid vpn: expected a string such as "wg0"'),
    ({"name": "web", "dns": "192.0.2.53"}, "invalid dns: expected a list"),
    ({"name": "web", "colour": ["red"]}, "unknown option 'colour'"), ("web", "expected a dictionary"),
])
def test_bus_options_are_checked_against_the_table(options, message):
    with pytest.raises(ValidationError, match=message):
        parse_run_options(options)


def test_a_state_record_carries_every_option_and_an_old_one_takes_defaults():
    spec = JailSpec("web", dns=("192.0.2.53",), keep=True, publish=(Publish(6000, 80, "udp"),),
                    deny=("192.0.2.0/24",), no_lan=True)
    record = JailRecord(spec, 1000, 7, READY)
    assert JailRecord.from_json(record.to_json()) == record
    old = '{"spec": {"name": "web", "vpn": "wg0"}, "owner_uid": 1000, "slot": 7, "status": "ready"}'
    assert JailRecord.from_json(old).spec == JailSpec("web", vpn="wg0")


@pytest.mark.parametrize("argv", [
    ["run", "--vpn"], ["run", "--bogus", "ls"], ["run", "--keep=yes", "ls"], ["stop"], ["ls", "extra"],
    ["nonsense"], [], ["run", "--vpn", "wg0;x", "ls"], ["run", "--dns=300.1.1.1", "ls"],
    ["run", "--dn", "300.1.1.1", "ls"], ["run", "--publish", "6000", "ls"],
])
def test_usage_mistakes_exit_125_with_one_line(argv, capsys):
    """Whichever parser read the line (--dn: argparse's abbreviation; --dns=: the quick one)."""
    assert cli.main(argv) == cli.EXIT_APPJAIL
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("appjail: ") and err.count("\n") == 1


def test_argparse_mistakes_say_where_the_help_is(capsys):
    cli.main(["run", "--vpn"])
    assert capsys.readouterr().err == ("appjail: argument --vpn: expected one argument "
                                       "(see `appjail run --help`)\n")
    cli.main(["run", "--dn", "300.1.1.1", "ls"])
    via_argparse = capsys.readouterr().err
    cli.main(["run", "--dns", "300.1.1.1", "ls"])
    assert capsys.readouterr().err == via_argparse
