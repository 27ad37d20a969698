"""Jails with programs in them: who owns what, who may act, when a jail ends.

The helper's D-Bus object hands every authorised request to the Supervisor.
It runs in the GLib main loop's thread only: launched programs are the
helper's children, reaped by GLib child watches, and a jail whose namespace
has no process left is torn down unless it was created with keep.

Each launch comes with an exit pipe: the caller gets its read end, and the
helper writes "CODE SIGNAL\n" into it when the program has ended, after a
jail the exit left empty is gone. End-of-file without a line means the
helper itself went away.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from gi.repository import GLib

from .. import interface as api
from ..model import (JailSpec, LaunchSpec, ValidationError, parse_run_options, validate_deny,
                     validate_dns, validate_name, validate_publish)
from . import hostports, launch, netns, resolv, traffic
from .authz import Caller
from .jails import Conflict, Engine, Jail, JailError

log = logging.getLogger(__name__)

EMPTY_POLL_MS = 500
STOP_GRACE_S = 2.0
ALLOWED_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                             signal.SIGKILL, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT,
                             signal.SIGTSTP, signal.SIGWINCH})


class NotAllowed(Exception):
    """The caller may not act on this jail or process."""


def publish_needs_manage(options: object) -> str | None:
    """Why a Run with these options needs org.appjail.manage (one sentence), or None.

    Host ports below net.ipv4.ip_unprivileged_port_start are root's on this
    host (22, 80, 443...): publishing one is root's decision too. Options that
    do not parse need nothing here: Run itself refuses them.
    """
    try:
        publish = validate_publish(parse_run_options(options).get("publish", ()))
    except ValidationError:
        return None
    low = hostports.privileged_ports(publish)
    if not low:
        return None
    ports = ", ".join(f"{p.host_port}/{p.proto}" for p in low)
    return (f"publishing privileged host port {ports} needs polkit action {api.ACTION_MANAGE}")


@dataclass
class Process:
    """A running program the helper started; it leaves the table when it ends."""

    pid: int
    jail: str
    owner_uid: int
    exit_pipe: int  # write end; the caller holds the read end


class Supervisor:
    def __init__(self, engine: Engine, on_added: Callable[[str], None],
                 on_removed: Callable[[str], None]) -> None:
        self.engine = engine
        self.on_added = on_added
        self.on_removed = on_removed
        self.processes: dict[int, Process] = {}
        self._draining: set[str] = set()
        self._port_watches: dict[str, list[int]] = {}  # jail -> GLib sources refusing loopback

    # -- helpers -----------------------------------------------------------

    def _own_jail(self, caller: Caller, name: str) -> Jail:
        jail = self.engine.get(validate_name(name))
        if jail.owner_uid != caller.uid and not caller.may_manage:
            raise NotAllowed(f"jail {name!r} belongs to another user")
        return jail

    def _check_own_process(self, caller: Caller, pid: int) -> None:
        process = self.processes.get(pid)
        if process is None or process.owner_uid != caller.uid:
            raise NotAllowed(f"process {pid} is not a running program of yours")

    # -- run ---------------------------------------------------------------

    def run(self, caller: Caller, options: dict, program: LaunchSpec,
            fds: list[int]) -> tuple[str, int, int]:
        """Start `program`; (jail name, pid, the exit pipe's read end, for the caller to close)."""
        options = parse_run_options(options)
        if len(fds) != 3:
            raise ValidationError("invalid descriptors: expected stdin, stdout and stderr")
        name = options["name"]
        jail = self.engine.find(name)
        created = jail is None
        if jail is None:
            if not caller.may_manage and (reason := publish_needs_manage(options)):
                raise NotAllowed(reason)
            spec = JailSpec(name, options.get("vpn") or None, tuple(options.get("dns", ())),
                            options.get("keep", False), tuple(options.get("publish", ())),
                            tuple(options.get("deny", ())), options.get("no_lan", False))
            jail = self.engine.create(spec, caller.uid)
            self._watch_ports(jail)
            self.on_added(name)
        else:
            self._check_join(caller, jail, options)
        request = launch.LaunchRequest(
            netns_path=str(netns.netns_path(jail.netns)),
            resolver_dir=str(resolv.jail_etc_dir(jail.netns, self.engine.etc_netns)),
            argv=list(program.argv), env=program.env_dict(), cwd=program.cwd, fds=fds,
            context=_caller_context(caller), hide_system_bus=options.get("no_system_bus", False))
        exit_read, exit_write = os.pipe()
        try:
            pid = launch.launch(request, caller)
        except launch.LaunchError:
            os.close(exit_read)
            os.close(exit_write)
            if created:
                self._drain(name)
            raise
        os.set_blocking(exit_write, False)  # one short line into a fresh pipe; never wait on a reader
        self.processes[pid] = Process(pid, name, caller.uid, exit_write)
        GLib.child_watch_add(GLib.PRIORITY_DEFAULT, pid, self._child_exited)
        log.info("uid %d started pid %d in jail %s", caller.uid, pid, name)
        return name, pid, exit_read

    def _check_join(self, caller: Caller, jail: Jail, options: dict) -> None:
        if jail.owner_uid != caller.uid and not caller.may_manage:
            raise NotAllowed(f"jail {jail.name!r} belongs to another user")
        differs = []
        if "vpn" in options and (options["vpn"] or None) != jail.spec.vpn:
            differs.append(f"vpn {jail.spec.vpn or 'none'}")
        if "dns" in options and validate_dns(options["dns"]) != jail.dns:
            differs.append("dns " + ",".join(jail.dns))
        if "keep" in options and options["keep"] != jail.spec.keep:
            differs.append(f"keep {'yes' if jail.spec.keep else 'no'}")
        if "publish" in options and validate_publish(options["publish"]) != jail.spec.publish:
            differs.append("publish " + (",".join(map(str, jail.spec.publish)) or "none"))
        if "deny" in options and validate_deny(options["deny"]) != jail.spec.deny:
            differs.append("deny " + (",".join(jail.spec.deny) or "none"))
        if "no_lan" in options and options["no_lan"] != jail.spec.no_lan:
            differs.append(f"no-lan {'yes' if jail.spec.no_lan else 'no'}")
        if differs:
            raise Conflict(f"jail {jail.name!r} already exists with " + "; ".join(differs)
                           + ": leave those options out to join it, or pick another --name")

    # -- processes ---------------------------------------------------------

    def _child_exited(self, pid: int, status: int) -> None:
        process = self.processes.pop(pid, None)
        if process is None:
            return
        code, signum = (os.WEXITSTATUS(status), 0) if os.WIFEXITED(status) else (0, os.WTERMSIG(status))
        try:
            # a jail left empty goes first: whoever reads the exit may reuse its name at once
            self._drain(process.jail)
        finally:
            _report_exit(process.exit_pipe, code, signum)

    def signal(self, caller: Caller, pid: int, signum: int) -> None:
        self._check_own_process(caller, pid)
        if signum not in ALLOWED_SIGNALS:
            raise ValidationError(f"invalid signal {signum}")
        try:
            os.killpg(pid, signum)  # the program leads its own session and group
        except ProcessLookupError:
            pass

    # -- jail lifetime -----------------------------------------------------

    def _drain(self, name: str) -> None:
        """Tear the jail down once no process is left in it, unless kept."""
        if name in self._draining:
            return
        self._draining.add(name)
        if self._drain_step(name):
            GLib.timeout_add(EMPTY_POLL_MS, self._drain_step, name)

    def _drain_step(self, name: str) -> bool:
        """One check; True means check again later."""
        try:
            jail = self.engine.get(name)
        except JailError:
            self._draining.discard(name)
            return False
        if jail.spec.keep:
            self._draining.discard(name)
            return False
        if any(p.jail == name for p in self.processes.values()) \
                or netns.namespace_pids(jail.netns):
            return True
        self._draining.discard(name)
        self._destroy(name)
        return False

    def _watch_ports(self, jail: Jail) -> None:
        """Refuse, from the main loop, what loopback sends to the jail's held ports."""
        def refuse(_fd: int, _condition: int, port: hostports.HeldPort) -> bool:
            port.refuse()
            return True
        self._port_watches[jail.name] = [
            GLib.io_add_watch(port.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN, refuse, port)
            for port in jail.held_ports]

    def _destroy(self, name: str) -> None:
        for source in self._port_watches.pop(name, ()):
            GLib.source_remove(source)  # before the engine closes the sockets
        try:
            self.engine.destroy(name)
        finally:
            self.on_removed(name)

    def adopt_all(self) -> None:
        """After reconcile: watch adopted jails so empty ones still go away."""
        for jail in self.engine.list():
            self._watch_ports(jail)
            self._drain(jail.name)

    def stop(self, caller: Caller, name: str) -> None:
        jail = self._own_jail(caller, name)
        self._kill_all(jail.netns)
        self._draining.discard(name)
        self._destroy(name)

    @staticmethod
    def _kill_all(netns_name: str) -> None:
        """SIGTERM everything in the namespace, SIGKILL what is left after a grace period."""
        start = time.monotonic()
        sig = signal.SIGTERM
        while pids := netns.namespace_pids(netns_name):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            elapsed = time.monotonic() - start
            if elapsed > STOP_GRACE_S:
                sig = signal.SIGKILL
            if elapsed > STOP_GRACE_S + 2:
                log.warning("processes %s in %s did not die; tearing down anyway", pids, netns_name)
                return
            time.sleep(0.02)

    # -- queries -----------------------------------------------------------

    def visible_jails(self, caller: Caller) -> list[Jail]:
        return [j for j in self.engine.list() if j.owner_uid == caller.uid or caller.may_manage]

    def describe(self, jails: list[Jail]) -> list[dict]:
        """What `ls` shows of each jail: its shape, its processes, its totals."""
        totals = traffic.counters(self.engine.firewall, {j.name: j.firewall_rules.roles for j in jails})
        pids = netns.pids_by_namespace(j.netns for j in jails)
        vpn_up = {ifname: self.engine.vpn_up(ifname) for ifname in {j.spec.vpn for j in jails} - {None}}
        return [{
            "name": jail.name,
            "owner_uid": jail.owner_uid,
            "netns": jail.netns,
            "address": jail.addressing.jail_address,
            "vpn": jail.spec.vpn,
            "vpn_up": jail.spec.vpn is None or vpn_up[jail.spec.vpn],
            "dns": list(jail.dns),
            "keep": jail.spec.keep,
            "publish": [str(p) for p in jail.spec.publish],
            "deny": list(jail.spec.deny),
            "no_lan": jail.spec.no_lan,
            "pids": pids[jail.netns],
            "counters": totals.get(jail.name, {}),
        } for jail in jails]

    def inspect(self, caller: Caller, name: str) -> dict:
        jail = self._own_jail(caller, name)
        (described,) = self.describe([jail])
        return {**described, "connections": traffic.connections(jail.addressing.jail_address)}


def _caller_context(caller: Caller) -> launch.ProcessContext:
    """The calling process's umask, limits and loginuid, by the pid the bus daemon gave."""
    try:
        return launch.read_process_context(caller.pid, caller.uid)
    except (OSError, ValueError, KeyError) as exc:
        raise launch.LaunchError(f"cannot read the calling process (pid {caller.pid}): {exc}",
                                 launch.EXIT_SETUP_FAILED) from None


def _report_exit(exit_pipe: int, code: int, signum: int) -> None:
    try:
        os.write(exit_pipe, f"{code} {signum}\n".encode())
    except OSError:
        pass  # the caller closed its end: nobody is waiting
    finally:
        os.close(exit_pipe)
