"""`appjail-demo` (root only): appjail at work on a simulated internet, then nothing left.

Its own entry point, not a subcommand of `appjail`: it builds a lab and runs
a helper in this process, so it belongs with the lab, on root's side of the
privilege line; the unprivileged CLI imports nothing of it.

Builds the lab (an "uplink" namespace playing the internet, with a web server,
DNS and a WireGuard server; a "host" namespace with the WireGuard client),
starts a private system bus with polkitd, runs appjail-helper inside the
lab's host namespace, and has an unprivileged user run `curl` through a
`--vpn` jail: once with the tunnel up, once with it down (the kill switch),
once after it is back. Works offline. The machine's own network namespace,
its system bus and any real jails are left alone: the demo refuses to start
while jails exist, because its helper would take their names for leftovers.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

DEMO_PREFIX = "ajdemo"
DEMO_VPN = "ajdemo0"
DEMO_JAIL = "demo"
DEMO_USER = "appjail-demo"
GROUP = "appjail"
CURL_TIMEOUT_S = 3


class DemoError(Exception):
    """The demo cannot run here, or appjail did not behave as it should."""


Say = Callable[[str], None]


def run_demo(user: str | None = None, say: Say = print, cli_python: str = sys.executable,
             cli_pythonpath: str | None = None, bus_policies: Sequence[Path] = ()) -> None:
    """The whole demo; raises DemoError when something does not hold.

    cli_python/cli_pythonpath: how the user runs the CLI (the installed
    venv by default); bus_policies: extra bus policy files (the repository's
    own, when appjail is not installed).
    """
    from appjail.helper.kernel.netns import list_namespaces
    from appjail.lab import Lab
    from appjail.lab.bus import PrivateSystemBus
    from appjail.lab.helper import LabHelper, UserCommand

    if os.geteuid() != 0:
        raise DemoError("the demo builds network namespaces and needs root: sudo appjail-demo")
    if jails := list_namespaces("aj-"):
        raise DemoError(f"jails exist ({', '.join(jails)}): stop them before running the demo")
    with ExitStack() as stack:
        say("building a simulated internet in network namespaces (nothing of this machine's "
            "network is touched)")
        lab = stack.enter_context(Lab(prefix=DEMO_PREFIX, wg_ifname=DEMO_VPN))
        say(f"  web server {lab.SERVER_ADDR}, DNS {lab.DNS_ADDR}, host uplink address "
            f"{lab.HOST_UPLINK_ADDR}, WireGuard {lab.wg_ifname} with tunnel address "
            f"{lab.WG_CLIENT_TUNNEL_ADDR}")
        bus = stack.enter_context(PrivateSystemBus(extra_policies=bus_policies))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="appjail-demo-")))
        helper = LabHelper(lab.host_ns, bus.address, work / "run", work / "helper.log")
        stack.callback(helper.stop_and_clean)
        helper.start()
        say("appjail-helper runs in the simulated host, behind its own system bus and polkitd")
        name = stack.enter_context(_demo_user(user))
        cli = UserCommand(bus.address, cli_python, cli_pythonpath, lab.host_ns)
        _show(lab, cli, name, say)


def _show(lab, cli, user: str, say: Say) -> None:
    url = f"http://www.{lab.ZONE}/"
    curl = ["curl", "-sS", "--max-time", str(CURL_TIMEOUT_S), url]
    run = ["run", "--name", DEMO_JAIL, "--keep", "--vpn", lab.wg_ifname, "--dns", lab.DNS_ADDR]

    say(f"\n$ appjail {' '.join(run)} -- {' '.join(curl)}      (as {user})")
    first = cli.run(user, *run, "--", *curl)
    if first.returncode != 0:
        raise DemoError(f"curl in the jail failed ({first.returncode}): {first.stderr.strip()}")
    saw = first.stdout.strip()
    say(f"  the web server saw: {saw}")
    if saw != f"client={lab.WG_CLIENT_TUNNEL_ADDR}":
        raise DemoError(f"expected the tunnel address {lab.WG_CLIENT_TUNNEL_ADDR}, got {saw!r}")
    say(f"  that is the tunnel's address: the jail reached the server through {lab.wg_ifname}, "
        f"not through the host's uplink ({lab.HOST_UPLINK_ADDR})")
    say("\n$ appjail ls")
    say(_indent(cli.run(user, "ls").stdout))

    say(f"\n{lab.wg_ifname} goes down; curl runs again in the same jail, while tcpdump watches "
        f"the host's uplink for anything but WireGuard")
    lab.wg_down()
    capture = lab.capture(lab.host_uplink_if, lab.host_ns, "ip and not udp port 51820")
    try:
        blocked = cli.run(user, "run", "--name", DEMO_JAIL, "--", *curl)
    finally:
        leaked = capture.stop()
    say(f"  curl: exit {blocked.returncode} ({blocked.stderr.strip() or 'no output'})")
    say(f"  packets on the uplink outside the tunnel: {len(leaked)}")
    if blocked.returncode == 0 or leaked:
        raise DemoError("the kill switch did not hold: " + "; ".join(leaked[:3]))
    say("  the kill switch held: no route out but the tunnel")

    lab.wg_up()
    again = cli.run(user, "run", "--name", DEMO_JAIL, "--", *curl)
    say(f"\n{lab.wg_ifname} is back up; curl again: {again.stdout.strip() or again.stderr.strip()}")
    stopped = cli.run(user, "stop", DEMO_JAIL)
    if again.returncode != 0 or stopped.returncode != 0:
        raise DemoError(f"the jail did not recover or stop: {again.stderr}{stopped.stderr}".strip())
    say(f"$ appjail stop {DEMO_JAIL}\n\ndemo finished; removing the simulated internet")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip().splitlines())


@contextmanager
def _demo_user(requested: str | None) -> Iterator[str]:
    """The user who runs curl: the one asked for, the sudo user, or a temporary one."""
    name = requested or os.environ.get("SUDO_USER")
    if name and name != "root":
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise DemoError(f"no user named {name!r}") from None
        yield name
        return
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        raise DemoError(f"group {GROUP!r} does not exist: install appjail first "
                        "(sudo ./scripts/install)") from None
    from appjail.lab.helper import temporary_user

    with temporary_user(DEMO_USER, GROUP) as name:
        yield name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="appjail-demo", description="Build a simulated internet in network namespaces, run curl "
        "through a --vpn jail as USER, show the kill switch, remove it all (root only).")
    parser.add_argument("--user", help="who runs curl (default: the sudo user, else a temporary user)")
    args = parser.parse_args(argv)
    try:
        run_demo(args.user)
    except DemoError as exc:
        print(f"appjail-demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
