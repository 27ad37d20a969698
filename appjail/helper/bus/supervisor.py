"""Jails with programs in them: who owns what, who may act, when a jail ends.

The helper's D-Bus object hands every authorised request to the Supervisor.
It runs in the GLib main loop's thread only: launched programs are the
helper's children, reaped by GLib child watches, and a jail whose namespace
has no process left is torn down unless it was created with keep. Nothing
here waits on a user's work, the network or a daemon, or sleeps: a launch
is answered from its child's report pipe (or its deadline), a stop
escalates from timeouts, and a jail whose tunnel is still connecting
(OpenVPN) has its programs launched when the tunnel's daemon reports it up
(GLib.idle_add from its thread), or is removed, failing them, when the
daemon ends or the connect deadline passes. Making and removing a jail
(a WireGuard file's endpoint names, a tunnel daemon's end) run in worker
threads (offloop); the call is answered once they are done, and a Run or
Stop for a jail being made or removed waits for that.
Where systemd runs, a launched child waits at its gate until systemd has
put it into a scope of its user's slice (scopes.py); if systemd refuses,
the launch fails rather than run the program outside the user's limits.

Each launch comes with an exit pipe: the caller gets its read end, and the
helper writes "CODE SIGNAL\n" into it when the program has ended, after a
jail the exit left empty is gone. End-of-file without a line means the
helper itself went away.

Jails are per owner: a caller names its own jail `NAME`; `USER/NAME` or
`UID/NAME` names another owner's, which only a caller allowed
org.appjail.manage may act on (the service asks polkit before, and
jail_of checks again). Internally a jail is its JailId (owner, name).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gi.repository import GLib

from ... import interface as api
from ...model import JailSpec, ValidationError, disagreements, wire_options
from ..engine import offloop
from ..engine.drivers import Launcher, ScopePlacer
from ..engine.engine import Conflict, Engine, JailError, JailNotFound, LimitReached
from ..engine.jail import Jail, JailId
from ..engine import portforward
from ..firewall import traffic
from ..kernel import hostports, launch, resolv
from . import policy
from .policy import Caller
from .requests import RunRequest

log = logging.getLogger(__name__)

EMPTY_POLL_MS = 500
LAUNCH_DEADLINE_MS = 10_000  # fork to exec: the child's chdir() and execve() as the user
STOP_GRACE_MS = 2000  # SIGTERM, then SIGKILL
STOP_GIVE_UP_MS = 2000  # after SIGKILL: what is still there is left behind
STOP_POLL_MS = 20
# per user: programs between fork and exec (at the launch gate, or in chdir and execve), and
# launches waiting for a connecting jail's tunnel. Each holds a child or the caller's three
# descriptors; a user at either is refused (LimitReached) rather than take them from everyone.
MAX_STARTING_PER_USER = 16
MAX_WAITING_PER_USER = 16
ALLOWED_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                             signal.SIGKILL, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT,
                             signal.SIGTSTP, signal.SIGWINCH})


@dataclass
class Process:
    """A running program the helper started; it leaves the table when it ends."""

    pid: int
    jail: JailId
    owner_uid: int
    exit_pipe: int  # write end; the caller holds the read end


class _Launch:
    """A child between fork and exec, watched from the main loop, never waited on.

    Settled by two events in either order: the end of its report (or the
    deadline) and its exit status (a failed child is reaped before the
    call is answered, so the jail it leaves empty is gone by then).
    """

    def __init__(self, process: Process, started: launch.Started, exit_read: int, created: bool,
                 reply: Callable[[str, int, int], None],
                 fail: Callable[[BaseException], None], launcher: Launcher) -> None:
        self.process = process
        self.launcher = launcher
        self.report_fd = started.report_fd
        self.gate_fd: int | None = started.gate_fd  # None once opened or closed
        self.exit_read = exit_read
        self.created = created
        self.reply = reply
        self.fail = fail
        self.report = b""
        self.status: int | None = None
        self.reported = False
        self.watch = self.deadline = 0  # GLib sources: the report pipe, the deadline

    def open_gate(self) -> None:
        assert self.gate_fd is not None
        self.launcher.open_gate(self.gate_fd)
        self.gate_fd = None

    def end_report(self) -> None:
        """No more to read; a gate still closed closes for good: the child gives up."""
        self.reported = True
        os.close(self.report_fd)
        if self.gate_fd is not None:
            os.close(self.gate_fd)
            self.gate_fd = None


Fail = Callable[[BaseException], None]


Done = Callable[[BaseException | None], None]


@dataclass
class _Connecting:
    """The launches waiting for a connecting jail's tunnel, and their common deadline (a GLib source)."""

    deadline: int
    waiters: list[tuple[Callable[[], None], Fail]] = field(default_factory=list)

    def end(self, error: BaseException | None) -> None:
        """Start every waiting launch, or fail each with `error` (the deadline is gone already)."""
        for start, fail in self.waiters:
            if error is None:
                start()
            else:
                fail(error)


class Supervisor:
    def __init__(self, engine: Engine, on_added: Callable[[JailId], None],
                 on_removed: Callable[[JailId], None], scopes: ScopePlacer | None = None) -> None:
        self.engine = engine
        self.host = engine.host  # the machine's drivers, the engine's own
        # from a tunnel daemon's thread: look at the jail from the main loop
        engine.on_tunnel_change = lambda jail_id: GLib.idle_add(self._tunnel_changed, jail_id)
        self.scopes = scopes  # None: programs stay in the helper's cgroup
        self.on_added = on_added
        self.on_removed = on_removed
        self.processes: dict[int, Process] = {}
        self._launching: dict[int, _Launch] = {}
        self._draining: set[JailId] = set()
        self._stopping: dict[JailId, list[Done]] = {}
        self._port_watches: dict[JailId, list[int]] = {}  # jail -> GLib sources refusing loopback
        self._connecting: dict[JailId, _Connecting] = {}
        # jails being made or removed in a worker thread -> what to do once that is done
        self._creating: dict[JailId, list[Callable[[], None]]] = {}
        self._removing: dict[JailId, list[Done]] = {}
        self.host_netns = self.host.kernel.namespace_id("/proc/self/ns/net")  # the network its jails lead to
        self.root = Caller(0, 0, ())  # who declared jails belong to (keeper.py)
        self.declared_sources: dict[JailId, str] = {}  # a declared jail -> its file (keeper.py)

    # -- helpers -----------------------------------------------------------

    def confine(self, caller: Caller) -> Caller:
        """`caller` with the jail it runs inside, if any (see policy.confine)."""
        kernel = self.host.kernel
        jails = {kernel.namespace_id(kernel.netns_path(j.netns)): j.id for j in self.engine.list()}
        return policy.confine(caller, jails, self.host_netns)

    def jail_of(self, caller: Caller, address: str) -> Jail:
        """The jail addressed, if the caller may act on it and it is not on its way out."""
        owner_uid, name = policy.allowed(caller, address)
        jail = self.engine.find(name, owner_uid)
        if jail is None or jail.id in self._removing:
            raise JailNotFound(f"no jail named {address!r}")
        return jail

    def _check_own_process(self, caller: Caller, pid: int) -> None:
        process = self.processes.get(pid)
        policy.check_own_process(caller, pid, process and (process.owner_uid, process.jail))

    # -- run ---------------------------------------------------------------

    def run(self, caller: Caller, request: RunRequest, fds: list[int],
            reply: Callable[[str, int, int], None], fail: Fail) -> None:
        """Start the request's program with `fds` (stdin, stdout, stderr: the service checked there are
        three); reply(jail name, pid, the exit pipe's read end) once it has exec'd.

        reply must close the read end. What is wrong with the request raises;
        what fails later (making the jail, the program, its directory, the
        deadline, a tunnel that does not come up) goes to fail. A new jail is
        made in a worker thread; in a connecting jail the program starts once
        its tunnel is up; a Run for a jail being made or removed waits for that.
        """
        if sum(p.process.owner_uid == caller.uid for p in self._launching.values()) >= MAX_STARTING_PER_USER:
            raise LimitReached(f"{MAX_STARTING_PER_USER} programs of yours are starting already, as many as "
                               "one user may: try again once they have")
        program, settings = request.program, request.settings
        if len(fds) != 3:
            raise ValidationError("invalid descriptors: expected stdin, stdout and stderr")
        jail_id = (caller.uid, request.name)  # always the caller's own jail: nobody launches into another's
        held = _Held(fds)  # the call's own are closed when this returns: the launch may come later

        def failed(error: BaseException) -> None:
            held.close()
            fail(error)

        def start(jail: Jail, created: bool) -> None:
            request = launch.LaunchRequest(
                netns_path=str(self.host.kernel.netns_path(jail.netns)),
                resolver_dir=str(resolv.jail_etc_dir(jail.netns, self.engine.etc_netns)),
                argv=list(program.argv), env={**program.env_dict(), **portforward.environment(jail)},
                cwd=program.cwd, fds=held.fds,
                context=caller.context, hide_system_bus=settings["no_system_bus"])
            try:
                self._launch(jail, request, caller, created, reply, fail)
            except Exception as exc:  # noqa: BLE001 - the waiting call gets it
                fail(exc)
            finally:
                held.close()

        def ready(jail: Jail, created: bool) -> None:
            if not jail.connecting:
                return start(jail, created)
            if self._waiting_of(caller.uid) >= MAX_WAITING_PER_USER:
                if created:
                    self._drain(jail.id)
                return failed(LimitReached(f"{MAX_WAITING_PER_USER} programs of yours are waiting for their "
                                           "jails' tunnels already, as many as one user may: try again once "
                                           "those are up"))
            self._when_connected(jail, lambda: start(jail, created), failed)

        def attempt() -> None:
            """Join the jail or make it, once whatever is making or removing it is done."""
            try:
                if jail_id in self._stopping:
                    raise Conflict(f"jail {jail_id[1]!r} is being stopped: try again in a moment")
                if self._after_work(jail_id, attempt):
                    return
                jail = self.engine.find(jail_id[1], jail_id[0])
                policy.check_inside(caller, jail and jail.id, "start programs in")
                if jail is not None:
                    self._check_join(jail, request)
                    return ready(jail, False)
                self._create(caller, JailSpec(**request.options), request.tunnels, lambda made: ready(made, True),
                             failed)
            except Exception as exc:  # noqa: BLE001 - the call gets it, now or later
                failed(exc)

        attempt()

    def _create(self, caller: Caller, spec: JailSpec, tunnels: dict, ready: Callable[[Jail], None],
                fail: Fail) -> None:
        """Make the caller's jail in a worker thread: ready(jail) or fail(error) in the main loop.

        Looking up a WireGuard file's endpoint names and starting a tunnel
        take time the main loop does not have (and the engine's lock may be
        held by another jail's teardown).
        """
        jail_id = (caller.uid, spec.name)
        self._creating[jail_id] = []
        unlimited = policy.unlimited(caller)

        def made(jail: Jail | None, error: BaseException | None) -> None:
            waiting = self._creating.pop(jail_id)
            try:
                if error is not None:
                    return fail(error)
                assert jail is not None
                self._watch_ports(jail)
                self._scope_tunnel(caller.uid, jail)
                self.on_added(jail.id)
                ready(jail)
            except Exception as exc:  # noqa: BLE001 - the call gets it
                fail(exc)
            finally:
                for then in waiting:
                    then()

        offloop.run(lambda: self.engine.create(spec, caller.uid, unlimited=unlimited, **tunnels), made,
                    "appjail-create")

    def keep(self, spec: JailSpec, tunnels: dict, done: Done) -> None:
        """Make a declared jail, root's (keeper.py): done(error or None) once it is up; one whose
        tunnel does not come up in time is removed again."""
        def ready(jail: Jail) -> None:
            if jail.connecting:
                return self._when_connected(jail, lambda: done(None), done)
            done(None)
        self._create(self.root, spec, tunnels, ready, done)

    def _scope_tunnel(self, uid: int, jail: Jail) -> None:
        """Where systemd runs, the jail's tunnel daemon goes into a scope of its owner's slice, like the
        owner's programs: what it uses counts against the owner, not the helper."""
        pid = self.engine.tunnel_daemon(jail)
        if pid is None or self.scopes is None or not self.scopes.available:
            return

        def placed(error: str | None) -> None:
            if error is not None:
                log.warning("jail %s: its tunnel daemon stays in the helper's cgroup: %s", jail.name, error)
        self.scopes.place(uid, pid, jail.tunnel["type"].encode(), placed)

    def _after_work(self, jail_id: JailId, then: Callable[[], None]) -> bool:
        """then() once the jail's creation or removal under way is done; False when none is."""
        if jail_id in self._creating:
            self._creating[jail_id].append(then)
            return True
        return self._after_removal(jail_id, lambda _error: then())

    def _waiting_of(self, uid: int) -> int:
        """How many launches of UID's wait for a connecting tunnel."""
        return sum(len(waiting.waiters) for (owner, _), waiting in self._connecting.items() if owner == uid)

    def _after_removal(self, jail_id: JailId, done: Done) -> bool:
        """done(error or None) once the jail's removal under way is done; False when none is."""
        if jail_id not in self._removing:
            return False
        self._removing[jail_id].append(done)
        return True

    def _launch(self, jail: Jail, request: launch.LaunchRequest, caller: Caller, created: bool,
                reply: Callable[[str, int, int], None], fail: Fail) -> None:
        """Fork the program's child and watch it from the main loop (see _Launch)."""
        exit_read, exit_write = os.pipe()
        try:
            started = self.host.launcher.start(request, caller)
        except launch.LaunchError as exc:
            os.close(exit_read)
            os.close(exit_write)
            if created:
                error = exc  # the name `exc` ends with this block; the answer comes after the jail is gone
                return self._drain(jail.id, lambda: fail(error))
            raise
        os.set_blocking(exit_write, False)  # one short line into a fresh pipe; never wait on a reader
        os.set_blocking(started.report_fd, False)
        pending = _Launch(Process(started.pid, jail.id, caller.uid, exit_write), started,
                          exit_read, created, reply, fail, self.host.launcher)
        self._launching[started.pid] = pending
        GLib.child_watch_add(GLib.PRIORITY_DEFAULT, started.pid, self._child_exited)
        pending.watch = GLib.io_add_watch(started.report_fd, GLib.PRIORITY_DEFAULT,
                                          GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR,
                                          self._child_reported, pending)
        pending.deadline = GLib.timeout_add(LAUNCH_DEADLINE_MS, self._launch_overdue, pending)
        if self.scopes is not None and self.scopes.available:
            self.scopes.place(caller.uid, started.pid, request.argv[0], lambda error: self._placed(pending, error))
        else:
            pending.open_gate()

    # -- tunnels still connecting --------------------------------------------

    def _when_connected(self, jail: Jail, start: Callable[[], None], fail: Fail) -> None:
        """start() once the connecting jail's tunnel is up; fail(error) if it is removed first."""
        waiting = self._connecting.get(jail.id)
        if waiting is None:
            deadline = GLib.timeout_add(int(self.engine.connect_timeout * 1000), self._connect_overdue, jail.id)
            waiting = self._connecting[jail.id] = _Connecting(deadline)
            GLib.idle_add(self._tunnel_changed, jail.id)  # it may have come up while the jail was being made
        waiting.waiters.append((start, fail))

    def _stop_waiting(self, jail_id: JailId) -> _Connecting | None:
        """The launches waiting for the jail's tunnel, no longer on a deadline (None: none wait)."""
        waiting = self._connecting.pop(jail_id, None)
        if waiting is not None and waiting.deadline:
            GLib.source_remove(waiting.deadline)
        return waiting

    def _tunnel_changed(self, jail_id: JailId) -> bool:
        if jail_id in self._connecting:
            self._settle_connection(jail_id, overdue=False)
        return False

    def _connect_overdue(self, jail_id: JailId) -> bool:
        self._connecting[jail_id].deadline = 0  # this source ends by returning False
        self._settle_connection(jail_id, overdue=True)
        return False

    def _settle_connection(self, jail_id: JailId, overdue: bool) -> None:
        """The tunnel is up: launch the waiting programs; or it will not be: remove the jail, fail them."""
        jail = self.engine.find(jail_id[1], jail_id[0])
        assert jail is not None, "a connecting jail leaves only through _destroy, which ends the wait"
        try:
            if not self.engine.connected(jail, overdue):
                return
        except JailError as exc:
            log.warning("%s", exc)
            waiting, why = self._stop_waiting(jail_id), exc  # `exc` is gone after this block
            assert waiting is not None
            self._destroy(jail_id, lambda _error: waiting.end(why))
            return
        waiting = self._stop_waiting(jail_id)
        assert waiting is not None
        waiting.end(None)

    def _child_reported(self, _channel: object, _condition: int, pending: _Launch) -> bool:
        """The report pipe is readable: more of a failure report, or end-of-file."""
        try:
            chunk = os.read(pending.report_fd, launch.MAX_REPORT)
        except BlockingIOError:
            return True
        except OSError:
            chunk = b""
        if chunk:
            pending.report += chunk
            return True
        GLib.source_remove(pending.deadline)
        pending.end_report()
        self._settle(pending)
        return False

    def _launch_overdue(self, pending: _Launch) -> bool:
        """The child did not exec in time (nor systemd answer): give up on it."""
        self._abort(pending, f"the program did not start within {LAUNCH_DEADLINE_MS // 1000} s "
                             "(is its working directory or the program on a filesystem that "
                             "does not answer, or systemd busy?)")
        return False

    def _placed(self, pending: _Launch, error: str | None) -> None:
        """systemd answered for the child's scope: let it go on, or give up on it.

        Refused, the launch fails: a program outside its user's slice would
        escape the user's task and memory limits and outlive the logout,
        which an administrator running systemd counts on.
        """
        if pending.reported:  # answered already: the deadline, or the child died at its gate
            return
        if error is None:
            return pending.open_gate()
        GLib.source_remove(pending.deadline)
        self._abort(pending, error)

    def _abort(self, pending: _Launch, message: str) -> None:
        """The program will not start: answer now, kill the child, reap it whenever it dies."""
        GLib.source_remove(pending.watch)
        pending.end_report()
        pending.report = f"{api.EXIT_SETUP_FAILED} {message}".encode()
        if pending.status is None:  # our unreaped child: the pid is still its
            os.kill(pending.process.pid, signal.SIGKILL)
        pending.fail(launch.failure(pending.report))
        self._settle(pending)

    def _settle(self, pending: _Launch) -> None:
        """Answer the call once the child exec'd, or once it failed and has been reaped."""
        if not pending.reported:
            return
        process = pending.process
        error = launch.failure(pending.report)
        if error is None:
            del self._launching[process.pid]
            self.processes[process.pid] = process
            log.info("uid %d started pid %d in jail %s", process.owner_uid, process.pid, process.jail[1])
            pending.reply(process.jail[1], process.pid, pending.exit_read)
            if pending.status is not None:  # it has already ended, too
                self._child_exited(process.pid, pending.status)
        elif pending.status is not None:
            del self._launching[process.pid]
            os.close(process.exit_pipe)
            os.close(pending.exit_read)
            if pending.created:  # the child has left it: gone before the answer
                self._drain(process.jail, lambda: pending.fail(error))
            else:
                pending.fail(error)

    def _check_join(self, jail: Jail, request: RunRequest) -> None:
        differs = disagreements(request.options, jail.settings)
        for key, config in request.tunnels.items():
            asked = config.summary()
            # the same tunnel: type, peer and the file's addresses (OpenVPN's are pushed, not in the file)
            same = ("type", "peer", *(("addresses",) if asked["addresses"] else ()))
            if not jail.tunnel or any(jail.tunnel[k] != asked[k] for k in same):
                differs.append(f"{key} " + (jail.tunnel["endpoint"] if jail.tunnel else "none"))
        if differs:
            raise Conflict(f"jail {jail.name!r} already exists with " + "; ".join(differs)
                           + ": leave those options out to join it, or pick another --name")

    # -- processes ---------------------------------------------------------

    def _child_exited(self, pid: int, status: int) -> None:
        pending = self._launching.get(pid)
        if pending is not None:
            pending.status = status
            return self._settle(pending)
        process = self.processes.pop(pid, None)
        if process is None:
            return
        code, signum = (os.WEXITSTATUS(status), 0) if os.WIFEXITED(status) else (0, os.WTERMSIG(status))
        if process.jail in self._stopping:  # reported once stop() has removed the jail
            self._stopping[process.jail].append(
                lambda _error: _report_exit(process.exit_pipe, code, signum))
            return
        # a jail left empty goes first: whoever reads the exit may reuse its name at once
        self._drain(process.jail, lambda: _report_exit(process.exit_pipe, code, signum))

    def signal(self, caller: Caller, pid: int, signum: int) -> None:
        self._check_own_process(caller, pid)
        if signum not in ALLOWED_SIGNALS:
            raise ValidationError(f"invalid signal {signum}")
        try:
            os.killpg(pid, signum)  # the program leads its own session and group
        except ProcessLookupError:
            pass

    # -- jail lifetime -----------------------------------------------------

    def _drain(self, jail_id: JailId, then: Callable[[], None] = lambda: None) -> None:
        """Tear the jail down once no process is left in it, unless kept.

        then() once it is gone if it goes now (empty), else at once.
        """
        try:
            if jail_id not in self._draining and jail_id not in self._removing:
                self._draining.add(jail_id)
                if self._drain_step(jail_id):
                    GLib.timeout_add(EMPTY_POLL_MS, self._drain_step, jail_id)
        finally:
            if not self._after_removal(jail_id, lambda _error: then()):
                then()

    def _drain_step(self, jail_id: JailId) -> bool:
        """One check; True means check again later."""
        jail = self.engine.find(jail_id[1], jail_id[0])
        # stop() removes a stopping one
        if jail_id in self._stopping or jail_id in self._removing or jail is None or jail.spec.keep:
            self._draining.discard(jail_id)
            return False
        if any(p.jail == jail_id for p in self.processes.values()) \
                or self.host.kernel.namespace_pids(jail.netns):
            return True
        self._draining.discard(jail_id)
        self._destroy(jail_id)
        return False

    def _watch_ports(self, jail: Jail) -> None:
        """Refuse, from the main loop, what loopback sends to the jail's held ports."""
        def refuse(_fd: int, _condition: int, port: hostports.HeldPort) -> bool:
            port.refuse()
            return True
        self._port_watches[jail.id] = [
            GLib.io_add_watch(port.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN, refuse, port)
            for port in jail.held_ports or ()]  # a tunnel jail publishes nothing

    def _destroy(self, jail_id: JailId, done: Done = lambda _error: None) -> None:
        """Remove the jail in a worker thread; done(error or None) in the main loop once it is gone.

        Its tunnel's daemon may take seconds to end (tundaemon.terminate, openvpn's
        stop). Meanwhile the jail is neither listed nor joined, and the
        launches that waited for its tunnel fail once it is gone.
        """
        if self._after_removal(jail_id, done):
            return
        owner_uid, name = jail_id
        waiting = self._stop_waiting(jail_id)  # stopped while connecting
        for source in self._port_watches.pop(jail_id, ()):
            GLib.source_remove(source)  # before the engine closes the sockets
        self._removing[jail_id] = [done]

        def removed(_result: None, error: BaseException | None) -> None:
            if error is not None:
                log.error("removing jail %s of uid %d: %s", name, owner_uid, error)
            try:
                self.on_removed(jail_id)
            finally:
                if waiting is not None:
                    waiting.end(JailError(f"jail {name!r} was stopped before its tunnel was up"))
                for then in self._removing.pop(jail_id):
                    then(error)

        offloop.run(lambda: self.engine.destroy(name, owner_uid), removed, "appjail-destroy")

    def adopt_all(self) -> None:
        """After reconcile: watch adopted jails so empty ones still go away."""
        for jail in self.engine.list():
            self._watch_ports(jail)
            self._drain(jail.id)

    def stop(self, caller: Caller, address: str, done: Done) -> None:
        """End the jail's programs, then remove it; done(error or None) when it is gone.

        SIGTERM first, SIGKILL after STOP_GRACE_MS, from main-loop timeouts,
        then the removal in a worker thread: a program or a tunnel daemon
        that ignores SIGTERM delays only this call.
        """
        jail_id = policy.allowed(caller, address)
        policy.check_inside(caller, jail_id, "stop")
        if jail_id in self._stopping:  # already on its way
            return self._stopping[jail_id].append(done)
        if self._after_removal(jail_id, done):  # emptied, on its way out
            return
        jail = self.jail_of(caller, address)
        if jail.id in self._creating:  # made, its first program not yet started: stop it after that
            return self._creating[jail.id].append(lambda: self._stop_later(caller, address, done))
        self._stop(jail, done)

    def lose(self, jail_id: JailId, why: str) -> None:
        """Stop a jail the helper could not keep as promised (its rules could not be put back)."""
        jail = self.engine.find(jail_id[1], jail_id[0])
        if jail is None or jail_id in self._stopping or jail_id in self._removing:
            return
        log.error("stopping jail %s of uid %d: %s", jail.name, jail.owner_uid, why)
        if jail.id in self._creating:
            return self._creating[jail.id].append(lambda: self.lose(jail_id, why))
        self._stop(jail, lambda _error: None)

    def _stop(self, jail: Jail, done: Done) -> None:
        self._stopping[jail.id] = [done]
        started = time.monotonic()
        if not self.host.kernel.signal_namespace(jail.netns, signal.SIGTERM):
            self._finish_stop(jail.id)  # nothing runs in it
        else:
            GLib.timeout_add(STOP_POLL_MS, self._stop_step, jail.id, jail.netns, started)

    def _stop_step(self, jail_id: JailId, netns_name: str, started: float) -> bool:
        """One look at a stopping jail; True means look again later."""
        elapsed_ms = (time.monotonic() - started) * 1000
        if elapsed_ms < STOP_GRACE_MS:
            if self.host.kernel.namespace_pids(netns_name):
                return True
        elif self.host.kernel.signal_namespace(netns_name, signal.SIGKILL):
            if elapsed_ms < STOP_GRACE_MS + STOP_GIVE_UP_MS:
                return True
            log.warning("processes in %s did not die; tearing down anyway", netns_name)
        self._finish_stop(jail_id)
        return False

    def _stop_later(self, caller: Caller, address: str, done: Done) -> None:
        try:
            self.stop(caller, address, done)
        except Exception as exc:  # noqa: BLE001 - the waiting call gets it
            done(exc)

    def _finish_stop(self, jail_id: JailId) -> None:
        def finished(error: BaseException | None) -> None:
            for done in self._stopping.pop(jail_id):
                done(error)

        if self.engine.find(jail_id[1], jail_id[0]) is None:
            return finished(None)
        self._destroy(jail_id, finished)

    # -- queries -----------------------------------------------------------

    def visible_jails(self, caller: Caller) -> list[Jail]:
        """The caller's jails (everyone's, managing), but none on its way out."""
        return [j for j in self.engine.list()
                if (j.owner_uid == caller.uid or caller.may_manage) and j.id not in self._removing]

    def describe(self, jails: list[Jail]) -> list[dict]:
        """What `ls` shows of each jail: its shape, its processes, its totals."""
        nat = [j for j in jails if j.tunnel is None]
        inside = self.host.policy.read_dropped([j.netns for j in nat])
        read = traffic.counters(self.engine.firewall, {j.firewall_rules.name: j.firewall_rules.roles for j in nat},
                                {j.firewall_rules.name: inside[j.netns] for j in nat if j.netns in inside})
        # per kernel name, the one name no two jails share
        totals = {j.netns: read.get(j.firewall_rules.name, {}) for j in nat}
        tunnel = {j.netns: self.engine.tunnel_status(j) for j in jails if j.tunnel is not None}
        totals.update({j.netns: self.engine.tunnel_counters(j) for j in jails if j.tunnel is not None})
        pids = self.host.kernel.pids_by_namespace(j.netns for j in jails)
        vpn_up = {ifname: self.engine.vpn_up(ifname) for ifname in {j.spec.vpn for j in jails} - {None}}
        return [{
            **wire_options(jail.settings),
            "owner_uid": jail.owner_uid,
            "netns": jail.netns,
            "address": jail.address,
            "vpn_up": tunnel[jail.netns]["up"] if jail.tunnel else jail.spec.vpn is None or vpn_up[jail.spec.vpn],
            "tunnel": tunnel.get(jail.netns),
            "pids": pids[jail.netns],
            "counters": totals[jail.netns],
            "ports_not_held": [str(entry) for entry in jail.ports_not_held],
            "repairs": jail.repairs.as_dict(),
            "source": self.declared_sources.get(jail.id),
            "forwarded_port": jail.forwarder.status() if jail.forwarder else None,
        } for jail in jails]

    def inspect(self, caller: Caller, address: str) -> dict:
        jail = self.jail_of(caller, address)
        (described,) = self.describe([jail])
        # a tunnel jail's traffic passes no netfilter hook: no connections, nothing blocked
        if jail.tunnel:
            return {**described, "blocked": [], "connections": [], "connections_cut": False}
        connections, cut = self.host.conntrack.connections(jail.address)
        blocked = traffic.blocked(self.engine.firewall, jail.firewall_rules.name, self.host.policy,
                                  jail.netns, jail.policy.blocked_set)
        return {**described, "blocked": blocked,
                "connections": connections, "connections_cut": cut}


class _Held:
    """Copies of a Run's stdin, stdout and stderr, kept until its program starts or the Run fails."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = [os.dup(fd) for fd in fds]

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)


def _report_exit(exit_pipe: int, code: int, signum: int) -> None:
    try:
        os.write(exit_pipe, f"{code} {signum}\n".encode())
    except OSError:
        pass  # the caller closed its end: nobody is waiting
    finally:
        os.close(exit_pipe)
