"""The Debian package's files agree with the code: one version, every command and option in
the man pages and the completion, the lab in appjail-demo alone."""

import argparse
import re
from pathlib import Path

import pytest

import appjail
from appjail import cli
from appjail.helper import main as helper_main
ROOT = Path(__file__).resolve().parents[2]
DEBIAN = ROOT / "debian"


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag not in ("-h", "--help")}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_version_lives_in_one_place_and_the_cli_prints_it(capsys):
    top = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert re.match(r"appjail \(([^)]+)\)", top).group(1) == appjail.__version__
    assert 'version = {attr = "appjail.__version__"}' in (ROOT / "pyproject.toml").read_text()
    with pytest.raises(SystemExit) as ended:
        cli.main(["--version"])
    assert ended.value.code == 0 and capsys.readouterr().out == f"appjail {appjail.__version__}\n"


def test_the_man_pages_name_every_command_and_option(capsys):
    page = (ROOT / "docs/man/appjail.1").read_text().replace("\\-", "-")
    parser = cli.build_parser()
    commands = _subparsers(parser)
    for name, command in commands.items():
        assert re.search(rf"^\.BI? \"?{name}\b", page, re.M), name
        assert _options(command) <= set(re.findall(r"--?[a-z][a-z-]*", page)), name
    assert "--version" in page
    helper_page = (ROOT / "docs/man/appjail-helper.8").read_text().replace("\\-", "-")
    with pytest.raises(SystemExit):
        helper_main.parse_args(["--help"])
    helper_options = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out)) - {"--help"}
    assert helper_options and helper_options <= set(re.findall(r"--[a-z][a-z-]*", helper_page))
    assert (DEBIAN / "appjail.manpages").read_text().split() == ["docs/man/appjail.1", "docs/man/appjail-helper.8"]


def test_the_completion_offers_every_command_and_run_option():
    script = (ROOT / "completion/appjail").read_text()
    commands = _subparsers(cli.build_parser())
    listed = re.search(r'local commands="([^"]*)"', script).group(1).split()
    assert sorted(listed) == sorted(commands)
    run_options = re.search(r'local run_options="([^"]*)"', script).group(1).split()
    assert sorted(run_options) == sorted(_options(commands["run"]))


def test_the_lab_ships_in_appjail_demo_alone():
    appjail_files = (DEBIAN / "appjail.install").read_text()
    assert "appjail/lab" not in appjail_files and "appjail-demo" not in appjail_files
    assert "dist-packages/appjail/lab" in (DEBIAN / "appjail-demo.install").read_text()
