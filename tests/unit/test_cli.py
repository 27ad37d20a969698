import os
import subprocess
import sys
from pathlib import Path

import pytest

from appjail import cli, client, model
from appjail.model import ValidationError

REPO = Path(__file__).resolve().parents[2]
PRIVILEGED = ("pyroute2", "iptc", "appjail.helper", "gi", "PyQt6")


@pytest.mark.parametrize("program,name", [
    ("firefox", "firefox"), ("/usr/bin/Firefox-ESR", "firefox-esr"), ("python3.11", "python3-11"),
    ("a-very-long-program-name", "a-very-long"), ("___", "jail"), ("x" * 40, "x" * 12)])
def test_default_jail_name(program, name):
    assert model.default_jail_name(program) == name


def request(*argv):
    return cli.run_request(cli.build_parser().parse_args(["run", *argv]))


def test_run_options_only_carry_what_was_given():
    assert request("--vpn", "wg0", "firefox", "--new-instance") == (
        {"name": "firefox", "vpn": "wg0"}, ["firefox", "--new-instance"])
    assert request("--name", "web", "--dns", "192.0.2.53", "--keep", "--", "ls", "-l") == (
        {"name": "web", "dns": ["192.0.2.53"], "keep": True}, ["ls", "-l"])
    assert request("--publish", "6000:8080", "--deny", "192.0.2.0/24", "--no-lan", "srv")[0] == {
        "name": "srv", "publish": ["6000:8080"], "deny": ["192.0.2.0/24"], "no_lan": True}
    assert request("--no-system-bus", "srv")[0] == {"name": "srv", "no_system_bus": True}


@pytest.mark.parametrize("argv", [["--name", "../x", "ls"], ["--vpn", "wg0;x", "ls"],
                                  ["--dns", "300.1.1.1", "ls"], ["--publish", "6000", "ls"],
                                  ["--deny", "192.0.2.1/24", "ls"], []])
def test_bad_options_fail_before_any_bus_call(argv):
    with pytest.raises(ValidationError):
        request(*argv)


PROFILES = """
[browser]
command = ["firefox", "--new-instance", "-P", "vpn"]
vpn = "wg0"
dns = ["10.64.0.1"]
"""


def test_a_profile_gives_command_and_options_and_the_command_line_wins(tmp_path, monkeypatch):
    (tmp_path / "appjail").mkdir()
    (tmp_path / "appjail" / "profiles.toml").write_text(PROFILES)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert request("-p", "browser") == (
        {"name": "browser", "vpn": "wg0", "dns": ["10.64.0.1"]}, ["firefox", "--new-instance", "-P", "vpn"])
    assert request("-p", "browser", "--vpn", "wg1") == (
        {"name": "browser", "vpn": "wg1", "dns": ["10.64.0.1"]}, ["firefox", "--new-instance", "-P", "vpn"])
    with pytest.raises(ValidationError, match="no profile named 'mail'"):
        request("-p", "mail")


def test_arguments_after_a_profile_are_added_to_its_command(tmp_path, monkeypatch):
    """What a menu entry's `appjail run -p NAME -- %u` opens; after `--` nothing is an option."""
    (tmp_path / "appjail").mkdir()
    (tmp_path / "appjail" / "profiles.toml").write_text(PROFILES)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    tail = ["firefox", "--new-instance", "-P", "vpn"]
    for parse in (cli.quick_args, cli.build_parser().parse_args):
        assert cli.run_request(parse(["run", "-p", "browser", "--", "--vpn=x", "b c"])) == (
            {"name": "browser", "vpn": "wg0", "dns": ["10.64.0.1"]}, [*tail, "--vpn=x", "b c"])
        assert cli.run_request(parse(["run", "-p", "browser", "--"]))[1] == tail


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


def test_the_demo_is_not_a_command_of_the_unprivileged_cli():
    """It runs a lab and a helper in its own process: root's side of the privilege line."""
    source = (REPO / "appjail" / "cli.py").read_text()
    assert "demo" not in source and "appjail.lab" not in source and ".lab" not in source
    with pytest.raises(cli.UsageError, match="invalid choice: 'demo'"):
        cli.build_parser().parse_args(["demo"])


def test_the_cli_speaks_the_bus_protocol_itself():
    code = "import sys, appjail.cli, appjail.client; print(sorted(m for m in sys.modules if m.startswith('dbus')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv", [
    ["run", "firefox"], ["run", "--vpn", "wg0", "--dns", "a", "--dns=b", "-p", "x", "--", "ls", "-l"],
    ["run", "--keep", "--no-lan", "--publish", "1:2", "--deny", "c", "prog", "--keep"],
    ["run", "-p", "browser"], ["run", "--name=web", "--", "--weird"],
])
def test_the_quick_run_parser_agrees_with_argparse(argv):
    assert vars(cli.quick_run_args(argv)) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [["run", "--help"], ["run", "--vp", "wg0", "x"], ["run", "--vpn"],
                                  ["run", "--keep=yes", "x"], ["ls"], []])
def test_the_quick_run_parser_leaves_anything_else_to_argparse(argv):
    assert cli.quick_run_args(argv) is None


@pytest.mark.parametrize("argv", [
    ["ls"], ["ls", "--json"], ["inspect", "web"], ["inspect", "--json", "web", "--watch"],
    ["inspect", "web", "--json", "--json"], ["stop", "web"],
])
def test_the_quick_parser_of_simple_commands_agrees_with_argparse(argv):
    assert vars(cli.quick_args(argv)) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["ls", "--help"], ["ls", "extra"], ["ls", "--js"], ["inspect"], ["inspect", "a", "b"],
    ["stop", "-x"], ["stop", "--", "web"], ["doctor"], ["profiles"], ["nonsense"], [],
])
def test_the_quick_parser_leaves_help_mistakes_and_other_commands_to_argparse(argv):
    assert cli.quick_args(argv) is None


@pytest.mark.parametrize("argv", [["run", "--", "true"], ["stop", "web"], ["inspect", "web"]])
def test_everyday_commands_load_no_enum_threading_or_regular_expressions(argv):
    """Each of them costs 1-10 ms of every call (-S: without what site.py imports here)."""
    code = (f"import sys, appjail.cli, appjail.client; appjail.cli.quick_args({argv!r})\n"
            "print(sorted(m for m in sys.modules if m in ('enum', 'threading', 're', 'argparse', 'json', 'pathlib',"
            " 'dataclasses')))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("written,status", [(b"7 0\n", 7), (b"0 15\n", 143), (b"0 0\n", 0)])
def test_the_exit_pipe_gives_the_shell_status(written, status):
    read_end, write_end = os.pipe()
    os.write(write_end, written)
    os.close(write_end)
    assert client.read_exit(read_end).status == status
    with pytest.raises(OSError):
        os.fstat(read_end)  # read_exit closes it


@pytest.mark.parametrize("written", [b"", b"7", b"x y\n", b"1 2 3\n", b"-1 0\n"])
def test_an_exit_pipe_closed_without_an_exit_means_the_helper_went_away(written):
    read_end, write_end = os.pipe()
    os.write(write_end, written)
    os.close(write_end)
    assert client.read_exit(read_end) is None


def test_a_vpn_interface_that_does_not_exist_here_is_named(tmp_path):
    from appjail.cli import missing_vpn

    net_dev = tmp_path / "dev"
    net_dev.write_text("Inter-|   Receive\n face |bytes\n    lo: 0 0\n  wg0: 0 0\n")
    assert missing_vpn("wg0", str(net_dev)) is None
    assert missing_vpn("wg9", str(net_dev)) == (
        "interface wg9 does not exist: the jail's traffic is blocked (kill switch) until it appears "
        "(a typo? `ip link` lists the interfaces)")
