"""`appjail`: run programs in network jails, list, inspect and stop them.

Unprivileged. Talks to appjail-helper over the system bus; imports nothing of
the helper, and loads dbus only for commands that need it, so it starts fast.
Exit status of `run`: the program's; 128+N when it died of signal N; 125 for
an appjail error (a usage mistake of any command too), 126 when the program
is not executable, 127 when it is not found.
"""

from __future__ import annotations

import _signal as signal  # the signal module wraps these numbers in enums: importing enum costs 3 ms
import os
import sys
import time
from types import SimpleNamespace

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on every start
if TYPE_CHECKING:
    import argparse
    from typing import NoReturn

from . import __version__
from . import interface as api
from . import model, report, tunnelfiles
from .browsers import refusal
from .model import FLAG, LIST, VALUE, Option, ValidationError, default_jail_name, parse_run_options

EXIT_APPJAIL = api.EXIT_SETUP_FAILED
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


PROFILE_OPTION = Option("profile", ("-p", "--profile"), VALUE,
                        "take the command and options from a profile (options given here win; "
                        "ARGS after -- are added to its command)", metavar="NAME")


def run_options() -> tuple[Option, ...]:
    """`run`'s options, for both parsers: the jail's (model.OPTIONS), then -p."""
    return (*model.OPTIONS, PROFILE_OPTION)


class UsageError(ValidationError):
    """A mistake on the command line (argparse's words); main() adds where help is."""


# Commands with only positionals and switches: name -> (help, positionals, {switch: help})
SIMPLE_COMMANDS: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    "ls": ("list your jails", (), {"--json": "print JSON"}),
    "inspect": ("show one jail: NAME, or USER/NAME (UID/NAME) of another user's", ("name",),
                {"--json": "print JSON", "--watch": "redraw every second until Ctrl-C"}),
    "stop": ("end every program in a jail and remove it: NAME, or USER/NAME (UID/NAME)", ("name",), {}),
    "reload": ("make root's declared jails (/etc/appjail/jails.d) agree with their files again (manage)", (), {}),
}


def quick_args(argv: list[str]) -> SimpleNamespace | None:
    """The everyday commands read without argparse (whose import and parser
    cost ~10 ms of each call); None leaves the rest to argparse."""
    if argv[:1] == ["run"]:
        return quick_run_args(argv)
    simple = SIMPLE_COMMANDS.get(argv[0]) if argv else None
    if simple is None:
        return None
    _, positionals, switches = simple
    values = {switch[2:]: False for switch in switches}
    given = []
    for arg in argv[1:]:
        if arg in switches:
            values[arg[2:]] = True
        elif arg.startswith("-"):
            return None
        else:
            given.append(arg)
    if len(given) != len(positionals):
        return None
    return SimpleNamespace(command=argv[0], **dict(zip(positionals, given)), **values)


def quick_run_args(argv: list[str]) -> SimpleNamespace | None:
    """`run [OPTIONS] [--] PROGRAM [ARGS...]` read without argparse, which costs a
    fifth of a warm `appjail run`. None for anything else (help, other commands,
    abbreviations, mistakes): argparse then parses, and explains."""
    if argv[:1] != ["run"]:
        return None
    options = run_options()
    by_flag = {flag: option for option in options for flag in option.flags}
    values: dict = {option.key: None for option in options}
    position = 1
    while position < len(argv) and argv[position].startswith("-"):
        flag, has_inline, inline = argv[position].partition("=")
        if flag == "--" and not has_inline:
            position += 1
            break
        option = by_flag.get(flag)
        if option is None or (has_inline and option.kind == FLAG):
            return None
        if option.kind == FLAG:
            values[option.key] = True
            position += 1
            continue
        if not has_inline:
            position += 1
            if position >= len(argv):
                return None
            inline = argv[position]
        values[option.key] = [*(values[option.key] or []), inline] if option.kind == LIST else inline
        position += 1
    program = argv[position] if position < len(argv) else None
    return SimpleNamespace(command="run", program=program, args=argv[position + 1:], **values)


def build_parser() -> argparse.ArgumentParser:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(message)

    parser = Parser(prog="appjail", description="Run programs in their own network namespace.")
    parser.add_argument("--version", action="version", version=f"appjail {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a program in a jail",
                              description="Run PROGRAM as you, inside a network jail.")
    add_options(run, run_options())
    run.add_argument("program", metavar="PROGRAM", nargs="?")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")

    add_profiles_parser(commands)

    for name, (text, positionals, switches) in SIMPLE_COMMANDS.items():
        command = commands.add_parser(name, help=text)
        for positional in positionals:
            command.add_argument(positional)
        for switch, switch_text in switches.items():
            command.add_argument(switch, action="store_true", help=switch_text)

    service = commands.add_parser(
        "service", help="run a systemd service inside root's jail NAME, or not at all (root)",
        description="Write UNIT's drop-in: UNIT runs in jail NAME (root's, declared in /etc/appjail/jails.d), "
                    "stops when the jail goes and does not start without it. --remove UNIT takes it out.")
    service.add_argument("jail_and_unit", nargs="+", metavar="NAME UNIT")
    service.add_argument("--remove", action="store_true", help="remove UNIT's drop-in (give UNIT alone)")
    service.add_argument("--unit-dir", metavar="DIR", default=None,
                         help="where systemd's units are (default: /etc/systemd/system)")
    doctor = commands.add_parser("doctor", help="check that appjail can work here, and say how to fix what cannot")
    doctor.add_argument("--vpn", metavar="IFACE", help="also check this VPN interface")
    return parser


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    for option in options:
        if option.kind == FLAG:
            parser.add_argument(*option.flags, dest=option.key, action="store_true", default=None, help=option.help)
        else:
            parser.add_argument(*option.flags, dest=option.key, metavar=option.metavar,
                                action="append" if option.kind == LIST else "store",
                                help=option.help + (" (repeatable)" if option.kind == LIST else ""))


def add_profiles_parser(commands) -> None:
    """`profiles` (list), `profiles add NAME --from APP [run options] [--replace]`, `profiles rm NAME`."""
    profiles = commands.add_parser("profiles", help="list, add and remove profiles and their menu entries")
    actions = profiles.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser("add", help="make a profile and a menu entry from an application's desktop entry",
                             description="Make profile NAME (or rewrite it) from an application's desktop "
                                         "entry, with a menu entry that starts it in a jail.")
    add.add_argument("profile_name", metavar="NAME")
    add.add_argument("--from", dest="app", metavar="APP", required=True,
                     help="the application: a desktop-file ID (firefox-esr) or a .desktop file's path")
    add.add_argument("--replace", action="store_true",
                     help="shadow the application's own entry: its menu item and default handler run jailed")
    add_options(add, model.OPTIONS)
    rm = actions.add_parser("rm", help="remove a profile and its menu entry (restoring a replaced one)")
    rm.add_argument("profile_name", metavar="NAME")


def run_request(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """(run options, command) from the arguments and, with -p, a profile."""
    options: dict = {}
    command = [args.program, *args.args] if args.program else []
    if args.profile:
        from .profiles import load_profiles, profiles_path

        profile = load_profiles().get(args.profile)
        if profile is None:
            raise ValidationError(f"no profile named {args.profile!r} in {profiles_path()}")
        options = dict(profile.options)
        command = [*profile.command, *command]  # ARGS given: the files or links a menu entry opens
    if not command:
        raise ValidationError("no program given (appjail run [options] PROGRAM [ARGS...], or -p PROFILE)")
    given = {option.key: getattr(args, option.key) for option in model.OPTIONS}
    options.update({key: value for key, value in given.items() if value is not None})
    options.setdefault("name", default_jail_name(command[0]))
    return parse_run_options(tunnelfiles.read_files(options)), command


def cmd_run(args: argparse.Namespace) -> int:
    from .client import Client, HelperError, session_environment

    options, command = run_request(args)
    argv = [os.fsencode(a) for a in command]
    if refused := refusal(command, os.path.expanduser("~")):
        raise ValidationError(refused)
    client = Client()
    interactive = os.isatty(0)
    relay = None
    if interactive:
        from .terminal import PtyRelay

        relay = PtyRelay()
        fds = [relay.slave] * 3
    else:
        fds = [0, 1, 2]
    try:
        try:
            _, pid, exit_pipe = client.run(options, argv, session_environment(), os.getcwdb(), fds)
        except HelperError as exc:
            return _run_failure(exc)
        if options.get("vpn") and (missing := missing_vpn(options["vpn"])):  # the run is on: say why it is closed
            _error(f"warning: {missing}")
        if relay is None:
            return _wait_forwarding_signals(pid, exit_pipe)
        relay.close_slave()
        with relay:
            relay.relay(exit_pipe)
        return _exit_status(exit_pipe)
    finally:
        if relay is not None:
            relay.close_slave()


def missing_vpn(ifname: str, net_dev: str = "/proc/thread-self/net/dev") -> str | None:
    """What to say when the --vpn interface does not exist here (this namespace's interfaces: /proc
    shows the caller's, /sys the one that mounted it): the jail runs, closed, until it appears."""
    with open(net_dev) as listing:
        names = {line.split(":", 1)[0].strip() for line in listing.readlines()[2:]}
    if ifname in names:
        return None
    return (f"interface {ifname} does not exist: the jail's traffic is blocked (kill switch) until it appears "
            "(a typo? `ip link` lists the interfaces)")


def _run_failure(exc) -> int:
    code = api.ERROR_EXITS.get(exc.name, EXIT_APPJAIL)
    _error(exc.message)
    return code


def _wait_forwarding_signals(pid: int, exit_pipe: int) -> int:
    """A signal to us interrupts the wait for the exit, is sent on to the
    program, and the wait goes on. Each signal gets a connection of its own:
    a second signal may arrive while the first is being sent, and two calls
    interleaved on one connection could take each other's replies."""
    from .client import Client, HelperError

    def forward(signum, _frame) -> None:
        try:
            Client().signal(pid, signum)
        except HelperError:
            pass

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    return _exit_status(exit_pipe)


def _exit_status(exit_pipe: int) -> int:
    from .client import read_exit

    ended = read_exit(exit_pipe)
    if ended is None:
        _error("lost the program: appjail-helper went away before it ended")
        return EXIT_APPJAIL
    return ended.status


def cmd_ls(args: argparse.Namespace) -> int:
    import json

    from .client import Client

    jails = Client().list()
    print(json.dumps([report.normalised(j) for j in jails], indent=2) if args.json
          else report.jail_list(jails))
    return 0


WATCH_INTERVAL_S = 1.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from .client import Client

    client = Client()
    if args.json:
        print(json.dumps(report.normalised(client.inspect(args.name)), indent=2))
        return 0
    previous = client.inspect(args.name)
    if not args.watch:
        time.sleep(WATCH_INTERVAL_S)  # a second sample, for the rates
        print(report.inspection(client.inspect(args.name), previous, WATCH_INTERVAL_S))
        return 0
    try:
        while True:
            time.sleep(WATCH_INTERVAL_S)
            current = client.inspect(args.name)
            print(CLEAR_SCREEN + report.inspection(current, previous, WATCH_INTERVAL_S), flush=True)
            previous = current
    except KeyboardInterrupt:
        return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from .client import Client

    Client().stop(args.name)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from .client import Client

    done = Client().reload()
    for what in ("created", "recreated", "removed"):
        if done.get(what):
            print(f"{what}: {', '.join(done[what])}")
    for sentence in done.get("errors", []):
        _error(sentence)
    return EXIT_APPJAIL if done.get("errors") else 0


def cmd_service(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import services

    if os.geteuid() != 0:
        raise ValidationError("appjail service writes systemd's configuration: run it as root")
    unit_dir = Path(args.unit_dir) if args.unit_dir else services.UNIT_DIR
    if args.remove:
        if len(args.jail_and_unit) != 1:
            raise UsageError("--remove takes the UNIT alone")
        removed = services.remove_drop_in(args.jail_and_unit[0], unit_dir)
        print(f"removed {removed}; run `systemctl daemon-reload`" if removed
              else f"{args.jail_and_unit[0]} has no drop-in of appjail's")
        return 0
    if len(args.jail_and_unit) != 2:
        raise UsageError("expected NAME UNIT")
    name, unit = args.jail_and_unit
    from .client import Client

    jail = Client().inspect(model.validate_name(name))  # root's own: a bare NAME
    path = services.write_drop_in(name, jail["netns"], unit, unit_dir)
    print(f"wrote {path}; run `systemctl daemon-reload`, then (re)start {services.validate_unit(unit)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_checks

    return run_checks(args.vpn)


def cmd_profiles(args: argparse.Namespace) -> int:
    from . import menuentries

    if args.action == "add":
        options = {option.key: getattr(args, option.key) for option in model.OPTIONS}
        told = menuentries.add(args.profile_name, args.app,
                               {key: value for key, value in options.items() if value is not None}, args.replace)
    elif args.action == "rm":
        told = menuentries.remove(args.profile_name)
    else:
        told = menuentries.listing()
    print("\n".join(told))
    return 0


COMMANDS = {"run": cmd_run, "ls": cmd_ls, "inspect": cmd_inspect, "stop": cmd_stop,
            "doctor": cmd_doctor, "profiles": cmd_profiles, "reload": cmd_reload, "service": cmd_service}


def _error(message: str) -> None:
    print(f"appjail: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = quick_args(argv) or build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        command = f"appjail {argv[0]}" if argv and argv[0] in COMMANDS else "appjail"
        _error(f"{exc} (see `{command} --help`)")
    except ValidationError as exc:  # a ProfileError too
        _error(str(exc))
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as exc:
        from .client import HelperError

        if not isinstance(exc, HelperError):
            raise
        _error(exc.message)
    return EXIT_APPJAIL


def entry() -> NoReturn:
    """The `appjail` command: main(), then an exit that skips the interpreter's
    teardown (3 ms of every `appjail run`); nothing here needs it."""
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe: nothing more can be said anyway
            pass
    os._exit(status)


if __name__ == "__main__":
    entry()
