import subprocess
import sys

import pytest

from appjail import cli
from appjail.model import ValidationError

PRIVILEGED = ("pyroute2", "iptc", "appjail.helper", "gi", "PyQt6")


@pytest.mark.parametrize("program,name", [
    ("firefox", "firefox"), ("/usr/bin/Firefox-ESR", "firefox-esr"), ("python3.11", "python3-11"),
    ("a-very-long-program-name", "a-very-long"), ("___", "jail"), ("x" * 40, "x" * 12)])
def test_default_jail_name(program, name):
    assert cli.default_jail_name(program) == name


def test_run_options_only_carry_what_was_given():
    args = cli.build_parser().parse_args(["run", "--vpn", "wg0", "firefox", "--new-instance"])
    assert cli.run_options(args) == {"name": "firefox", "vpn": "wg0"}
    assert args.args == ["--new-instance"]
    args = cli.build_parser().parse_args(["run", "--name", "web", "--dns", "192.0.2.53", "--keep", "--", "ls", "-l"])
    assert cli.run_options(args) == {"name": "web", "dns": ["192.0.2.53"], "keep": True}
    assert (args.program, args.args) == ("ls", ["-l"])


@pytest.mark.parametrize("argv", [["run", "--name", "../x", "ls"], ["run", "--vpn", "wg0;x", "ls"],
                                  ["run", "--dns", "300.1.1.1", "ls"]])
def test_bad_options_fail_before_any_bus_call(argv):
    with pytest.raises(ValidationError):
        cli.run_options(cli.build_parser().parse_args(argv))


def test_bad_option_exit_status_and_one_line(capsys):
    assert cli.main(["run", "--vpn", "wg0;x", "ls"]) == cli.EXIT_APPJAIL
    err = capsys.readouterr().err
    assert err.startswith("appjail: invalid interface name") and err.count("\n") == 1


def test_cli_imports_nothing_privileged():
    code = ("import sys, appjail.cli, appjail.client, appjail.terminal, appjail.doctor\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {PRIVILEGED!r} or m.startswith('appjail.helper')]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
