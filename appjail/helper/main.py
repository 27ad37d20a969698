"""`appjail-helper`: the root service on the system bus."""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import sys
from pathlib import Path

from .. import interface as api
from ..hostfirewall import DEFAULT_FIREWALLD_ZONE
from .firewall import choice
from .engine.engine import DEFAULT_MAX_JAILS_PER_USER
from .engine.declared import DECLARED_DIR
from .engine.pool import DEFAULT_POOL
from .engine.state import RUN_DIR

log = logging.getLogger("appjail.helper")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="appjail-helper", description=__doc__)
    parser.add_argument("--bus-address", help="connect to this bus instead of the system bus")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="state directory (%(default)s)")
    parser.add_argument("--declared-dir", type=Path, default=DECLARED_DIR,
                        help="declared jails' files, NAME.toml (%(default)s)")
    parser.add_argument("--pool", default=DEFAULT_POOL, help="jail address pool (%(default)s)")
    parser.add_argument("--idle-exit", type=int, default=0, metavar="SECONDS",
                        help="exit after this long with no jail (0: never)")
    parser.add_argument("--firewall", metavar="BACKEND",
                        help=f"{', '.join((choice.AUTO, *choice.BACKENDS))} "
                             f"(default: ${choice.SETTING_ENV}, else {choice.AUTO})")
    parser.add_argument("--firewalld-zone", default=DEFAULT_FIREWALLD_ZONE, metavar="ZONE",
                        help="firewalld zone for appjail's interfaces while jails exist (%(default)s)")
    parser.add_argument("--max-jails-per-user", type=int, default=DEFAULT_MAX_JAILS_PER_USER, metavar="N",
                        help="jails one user may have at a time; root and callers polkit allows "
                             "org.appjail.manage are not limited (%(default)s)")
    parser.add_argument("--debug", action="store_true")
    return parser.parse_args(argv)


def raise_descriptor_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one; return it.

    The helper holds descriptors for everyone's calls, jails and launches:
    the per-user caps (service.py, supervisor.py) bound each user's share,
    and the usual soft 1024 would run out for all at once. Programs it
    launches get their caller's limits (launch.py), not the helper's.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.max_jails_per_user < 1:
        print(f"appjail-helper: --max-jails-per-user must be at least 1, not {args.max_jails_per_user}",
              file=sys.stderr)
        return 2
    try:
        chosen = choice.choose(args.firewall)
    except choice.UnknownBackend as exc:
        print(f"appjail-helper: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO,
                        format="appjail-helper: %(levelname)s %(name)s: %(message)s")
    if args.debug:
        logging.getLogger("appjail").setLevel(logging.DEBUG)
    import dbus
    from dbus.mainloop.glib import DBusGMainLoop
    from gi.repository import GLib

    from .. import linkdns
    from .firewall.coexist import Coexistence
    from .engine.drivers import machine
    from .engine.engine import Engine
    from .kernel.scopes import Scopes
    from .bus.keeper import Keeper
    from .bus.service import HelperService
    from .bus.supervisor import Supervisor

    DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(args.bus_address) if args.bus_address else dbus.SystemBus()
    # the name first: a second helper must exit before it sweeps the first one's half-made
    # jails and sockets. Calls queue in the connection until the main loop runs, by then served.
    if bus.request_name(api.BUS_NAME, dbus.bus.NAME_FLAG_DO_NOT_QUEUE) != dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER:
        print(f"appjail-helper: {api.BUS_NAME} is already owned: another helper is running "
              "(this one changed nothing)", file=sys.stderr)
        return 1
    log.info("descriptor limit: %d", raise_descriptor_limit())
    log.info("firewall backend: %s (%s)", chosen.name, chosen.reason)
    coexist = Coexistence(args.run_dir / "coexist.json", bus, args.firewalld_zone, args.bus_address)
    # the machine's own drivers: the engine's, and through it the supervisor's
    engine = Engine(run_dir=args.run_dir, pool=args.pool, firewall_choice=chosen, coexist=coexist,
                    max_jails_per_user=args.max_jails_per_user, drivers=machine(),
                    link_dns=lambda ifname: linkdns.link_dns(ifname, linkdns.Busctl(args.bus_address)))
    report = engine.reconcile()
    log.info("reconciled: adopted %s, removed %s", report.adopted or "nothing", report.removed or "nothing")
    engine.start_link_watch()

    service: HelperService | None = None
    supervisor = Supervisor(engine, on_added=lambda jail: service and service.notify(jail, "JailAdded"),
                            on_removed=lambda jail: service and service.notify(jail, "JailRemoved"),
                            scopes=Scopes(bus))
    keeper = Keeper(supervisor, args.declared_dir, args.run_dir)
    service = HelperService(bus, supervisor, keeper)
    # from the link watcher's thread: emit in the main loop's
    engine.on_vpn_change = lambda jail, up: GLib.idle_add(service.notify, jail, "VpnChanged", up)
    # from the firewall watcher's thread: stop, from the main loop, a jail whose rules could not be put back
    engine.on_lost = lambda jail, why: GLib.idle_add(supervisor.lose, jail, why)
    supervisor.adopt_all()
    keeper.start()  # after adopt_all: a declared jail adopted unchanged is kept

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, loop.quit)
    if args.idle_exit > 0:
        def exit_when_idle() -> bool:
            if not engine.list() and not keeper.declared:  # a declared jail not made yet: keep trying
                log.info("idle with no jail: exiting")
                loop.quit()
            return True
        GLib.timeout_add_seconds(args.idle_exit, exit_when_idle)
    log.info("serving %s", api.BUS_NAME)
    loop.run()
    engine.close()  # jails and their programs outlive the helper; reconcile adopts them
    try:
        bus.release_name(api.BUS_NAME)
    except dbus.exceptions.DBusException:
        pass  # the bus daemon ended first (a shutdown), and the name with it
    return 0


if __name__ == "__main__":
    sys.exit(main())
