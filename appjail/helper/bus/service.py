"""The helper's D-Bus object: every method passes polkit before it runs.

Each method is declared with `exported`, which looks its polkit action up in
interface.METHODS and refuses to declare a method that has none (deny
by default). A call then goes: right signature? -> who is it (bus daemon) ->
polkit for the method's action -> polkit for org.appjail.manage when the
jail named is someone else's (`USER/NAME`, `UID/NAME`: whether it exists or
not, so nobody learns another user's jail names without it) -> the Supervisor. Every failure becomes
one of the org.appjail.Error.* names with one sentence; tracebacks stay in
the helper's log.

A call counts against its user's pending calls from the moment the bus
daemon has said who sent it until it is answered: a user at
MAX_PENDING_CALLS_PER_USER is refused (LimitReached) rather than let one
user's calls, and the descriptors a Run brings, take the helper's
descriptors and memory from everyone. The call's message is dropped as soon
as it is dispatched (see _answers): what a Run still holds while polkit
decides is its three descriptors, and only when it brought exactly three.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import logging
import os
from collections.abc import Callable

import dbus
import dbus.lowlevel
import dbus.service

from ... import interface as api
from ...model import LaunchSpec, ValidationError
from ..engine.engine import Conflict, JailError, JailNotFound, LimitReached
from ..engine.jail import JailId
from ..kernel import launch
from . import policy
from .audience import Audience
from .authz import Authority, CallerUnknown, identify
from .policy import Caller, NotAllowed, publish_needs_manage
from .requests import RunRequest, parse_run
from .supervisor import Supervisor
from .keeper import Keeper

log = logging.getLogger(__name__)

# calls one user may have in progress (polkit deciding, a launch, a stop); 32 covers a tray and
# many CLIs at once, and bounds what one user's calls hold (a Run: three descriptors)
MAX_PENDING_CALLS_PER_USER = 32
DESCRIPTORS_PER_RUN = 3  # the program's stdin, stdout and stderr


class BusError(dbus.DBusException):
    """The helper's side of an error: a name of interface.py and one sentence (the client's is HelperError)."""

    include_traceback = False

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message, name=name)


def as_dbus_error(exc: BaseException) -> BusError:
    """Map what went wrong to an error name and one readable sentence."""
    if isinstance(exc, BusError):
        return exc
    if isinstance(exc, ValidationError):
        return BusError(api.ERROR_INVALID_ARGUMENT, str(exc))
    if isinstance(exc, NotAllowed):
        return BusError(api.ERROR_NOT_AUTHORIZED, str(exc))
    if isinstance(exc, JailNotFound):
        return BusError(api.ERROR_NOT_FOUND, str(exc))
    if isinstance(exc, Conflict):
        return BusError(api.ERROR_CONFLICT, str(exc))
    if isinstance(exc, LimitReached):
        return BusError(api.ERROR_LIMIT_REACHED, str(exc))
    if isinstance(exc, launch.LaunchError):
        return BusError(api.EXIT_ERRORS.get(exc.exit_code, api.ERROR_FAILED), str(exc))
    if isinstance(exc, JailError):
        return BusError(api.ERROR_FAILED, str(exc))
    log.error("internal error", exc_info=exc)
    return BusError(api.ERROR_FAILED, "internal error in appjail-helper (details in its log)")


def to_python(value):
    """dbus-python values to plain Python.

    A descriptor is refused here, untaken (its UnixFd closes it when dropped):
    descriptors are welcome only in a method's descriptor array, see dispatch.
    """
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.ByteArray, bytes)):
        return bytes(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, dbus.types.UnixFd):
        raise ValidationError("a descriptor is accepted only in the descriptor array")
    if isinstance(value, (dbus.Array, list)):
        return [to_python(v) for v in value]
    if isinstance(value, (dbus.Struct, tuple)):
        return tuple(to_python(v) for v in value)
    if isinstance(value, dict):
        return {to_python(k): to_python(v) for k, v in value.items()}
    raise ValidationError(f"unsupported value of type {type(value).__name__}")


def to_variant_dict(data: dict) -> dbus.Dictionary:
    def convert(value):
        if isinstance(value, bool):
            return dbus.Boolean(value)
        if isinstance(value, int):
            return dbus.Int64(value)
        if isinstance(value, str):
            return dbus.String(value)
        if isinstance(value, dict):
            return to_variant_dict(value)
        if isinstance(value, list):
            if all(isinstance(v, dict) for v in value) and value:
                return dbus.Array([to_variant_dict(v) for v in value], signature="a{sv}")
            if all(isinstance(v, int) for v in value):
                return dbus.Array([dbus.Int64(v) for v in value], signature="x")
            return dbus.Array([dbus.String(v) for v in value], signature="s")
        raise TypeError(f"cannot send {type(value).__name__}")

    return dbus.Dictionary({k: convert(v) for k, v in data.items() if v is not None}, signature="sv")


Respond = Callable[..., None]
_CALL_KEYWORDS = ("sender", "message", "reply", "error")


def exported(target: Callable[[list], str | None] | None = None,
             escalate: Callable[[list], str | None] | None = None, creates: bool = False,
             parse: Callable[[list], list] | None = None):
    """Declare a D-Bus method guarded by its polkit action, as interface.METHODS has it.

    parse(args) makes the typed values the method and escalate receive, once,
    as the call arrives; what does not parse is the call's answer once polkit
    has allowed it (an unauthorised caller learns nothing of it).
    target(args) names the jail the call acts on, when it does: acting on a
    jail of another user needs org.appjail.manage as well. escalate(args)
    says why these arguments need org.appjail.manage (None: they do not).
    creates: the call may make a jail, so a caller at the per-user limit is
    asked about org.appjail.manage (without a prompt), which lifts the limit.
    """
    def decorate(fn):
        if fn.__name__ not in api.METHODS:
            raise RuntimeError(f"method {fn.__name__} has no polkit action: refusing to export it")
        action, in_signature, out_signature, params = api.METHODS[fn.__name__]

        def handler(self, *args, sender=None, message=None, reply=None, error=None):
            del reply, error  # they hold the message, and so its descriptors: see _answers
            self.dispatch(fn, action, in_signature, out_signature, target, escalate, creates, parse, args,
                          sender, message)

        # dbus-python reads the argument names; the handler takes any count so
        # that a wrong-signature call gets our error, not a Python TypeError
        parameter = inspect.Parameter
        handler.__signature__ = inspect.Signature(
            [parameter(n, parameter.POSITIONAL_OR_KEYWORD) for n in ("self", *params)]
            + [parameter(n, parameter.POSITIONAL_OR_KEYWORD, default=None) for n in _CALL_KEYWORDS])
        handler.__name__ = fn.__name__
        return dbus.service.method(api.INTERFACE, in_signature=in_signature,
                                   out_signature=out_signature, sender_keyword="sender",
                                   message_keyword="message", async_callbacks=("reply", "error"),
                                   byte_arrays=True)(handler)

    return decorate


class HelperService(dbus.service.Object):
    def __init__(self, bus: dbus.Bus, supervisor: Supervisor, keeper: Keeper) -> None:
        super().__init__(bus, api.OBJECT_PATH)
        self.bus = bus
        self.authority = Authority(bus)
        self.audience = Audience(bus)
        self.supervisor = supervisor
        self.keeper = keeper
        self._pending: collections.Counter[int] = collections.Counter()  # uid -> calls not answered yet

    def notify(self, jail: JailId, member: str, *args) -> None:
        """Send signal `member` (the jail's name, then `args`) to whoever may know of the jail (audience.py)."""
        declared = getattr(type(self), member)
        self.audience.send(jail[0], member, declared._dbus_signature, jail[1], *args)

    def _ask(self, sender: str, action: str, interactive: bool, done: Callable[[bool], None]) -> None:
        """Polkit's answer for `sender` and `action` to done(), and to the audience."""
        def answered(allowed: bool) -> None:
            self.audience.answered(sender, action, allowed)
            done(allowed)
        self.authority.check(sender, action, interactive, answered)

    def dispatch(self, fn, action: str, in_signature: str, out_signature: str, target, escalate, creates: bool,
                 parse, args: tuple, sender: str, message: dbus.lowlevel.Message) -> None:
        call = _Call(*_answers(self.bus, message, out_signature))
        signature_ok = (message.get_signature() or "") == in_signature
        interactive = bool(message.get_allow_interactive_authorization())
        del message  # its descriptors close with it (see _answers)
        takes_fds = in_signature.endswith("ah")
        passed: list[dbus.types.UnixFd] = []  # the descriptor array, taken only once authorised
        try:
            if not signature_ok:
                raise ValidationError(f"expected arguments of type ({in_signature})")
            if takes_fds:
                *args, passed = args
                if len(passed) != DESCRIPTORS_PER_RUN:  # before polkit: none held longer than needed
                    raise ValidationError("invalid descriptors: expected stdin, stdout and stderr")
            values = [to_python(arg) for arg in args]
            malformed: ValidationError | None = None
            if parse is not None:
                try:
                    values = parse(values)
                except ValidationError as exc:
                    # answered once polkit has allowed the call: its sentence alone, for the
                    # traceback's frames would hold the message and its descriptors meanwhile
                    malformed = ValidationError(str(exc))
            caller = self.supervisor.confine(identify(self.bus, sender))
            self._admit(call, caller.uid)
            self.audience.met(sender, caller.uid)
        except CallerUnknown as exc:
            log.warning("%s", exc)
            _discard(passed)
            return call.fail(NotAllowed("the caller could not be identified"))
        except Exception as exc:
            _discard(passed)
            return call.fail(exc)

        def run(final_caller: Caller) -> None:
            if malformed is not None:
                _discard(passed)
                return call.fail(malformed)
            fds = [fd.take() for fd in passed]
            try:
                fn(self, final_caller, call, *values, *([fds] if takes_fds else []))
            except Exception as exc:
                call.fail(exc)
            finally:
                _close(fds)

        def denied(reason: str) -> None:
            _discard(passed)
            call.fail(NotAllowed(reason))

        def after_action(allowed: bool) -> None:
            if not allowed:
                return denied(f"not authorized to {_VERBS.get(action, action)} "
                              f"(polkit action {action})")
            owner = self._owner_of(target, values, caller)
            if owner is not None and owner != caller.uid:
                reason = (f"jail {target(values)!r} belongs to another user (acting on it needs "
                          f"polkit action {api.ACTION_MANAGE})")
            else:
                reason = escalate(values) if escalate is not None and malformed is None else None
            if reason is not None:
                return self._ask(sender, api.ACTION_MANAGE, interactive,
                                 lambda ok: run(_managing(caller)) if ok else denied(reason))
            if creates and not policy.unlimited(caller) and self.supervisor.engine.at_limit(caller.uid):
                return self._ask(sender, api.ACTION_MANAGE, False,
                                 lambda ok: run(_managing(caller) if ok else caller))
            run(caller)

        self._ask(sender, action, interactive, after_action)

    def _admit(self, call: _Call, uid: int) -> None:
        """Count `call` against `uid`'s pending calls until it is answered; one too many is refused."""
        if self._pending[uid] >= MAX_PENDING_CALLS_PER_USER:
            raise LimitReached(f"you have {MAX_PENDING_CALLS_PER_USER} calls to appjail-helper in progress, "
                               "as many as one user may: wait for one of them to finish")
        self._pending[uid] += 1
        call.answered = lambda: self._release(uid)

    def _release(self, uid: int) -> None:
        self._pending[uid] -= 1
        if not self._pending[uid]:
            del self._pending[uid]

    def _owner_of(self, target, values: list, caller: Caller) -> int | None:
        """The owner the call's jail address names (the caller's own for a bare NAME)."""
        if target is None:
            return None
        try:
            return policy.resolve(caller, target(values))[0]
        except (JailError, ValidationError):
            return None  # no such user, a bad address: the method itself says so

    # -- methods -----------------------------------------------------------

    @exported(parse=lambda v: [parse_run(v[0], LaunchSpec(tuple(v[1]), tuple(v[2]), v[3]))],
              escalate=lambda v: publish_needs_manage(v[0]), creates=True)
    def Run(self, caller: Caller, call: _Call, request: RunRequest, fds) -> None:
        """Start a program; the reply's descriptor is its exit pipe (see supervisor)."""

        def started(name: str, pid: int, exit_pipe: int) -> None:
            try:
                call.reply(name, dbus.UInt32(pid), dbus.types.UnixFd(exit_pipe))  # the reply holds a copy
            finally:
                os.close(exit_pipe)

        self.supervisor.run(caller, request, fds, call.later(started), call.fail)

    @exported()
    def Signal(self, caller: Caller, call: _Call, pid, signum) -> None:
        self.supervisor.signal(caller, pid, signum)
        call.reply()

    @exported(target=lambda v: v[0])
    def Stop(self, caller: Caller, call: _Call, name) -> None:
        self.supervisor.stop(caller, name, call.later(
            lambda error: call.reply() if error is None else call.fail(error)))

    @exported()
    def List(self, caller: Caller, call: _Call) -> None:
        """The caller's jails; everyone's for a caller polkit allows to manage (no prompt)."""
        def answer(may_manage: bool) -> None:
            viewer = _managing(caller) if may_manage else caller
            jails = [to_variant_dict(j)
                     for j in self.supervisor.describe(self.supervisor.visible_jails(viewer))]
            call.reply(dbus.Array(jails, signature="a{sv}"))

        self._ask(caller.sender, api.ACTION_MANAGE, False, call.later(answer))

    @exported(target=lambda v: v[0])
    def Inspect(self, caller: Caller, call: _Call, name) -> None:
        call.reply(to_variant_dict(self.supervisor.inspect(caller, name)))

    @exported()
    def WhoAmI(self, caller: Caller, call: _Call) -> None:
        answers: dict[str, bool] = {}

        def ask(action: str, key: str, then: Callable[[], None]) -> None:
            def record(ok: bool) -> None:
                answers[key] = ok
                then()
            self._ask(caller.sender, action, False, call.later(record))

        choice = self.supervisor.engine.firewall_choice

        def reply() -> None:
            # what is wrong with the declared jails' files: root's business, a manager's too
            errors = {"declared_errors": sorted(self.keeper.errors.values())} \
                if answers["may_manage"] or caller.uid == 0 else {}
            call.reply(to_variant_dict({"uid": caller.uid, **answers, "firewall": choice.name,
                                        "firewall_reason": choice.reason, **errors}))

        ask(api.ACTION_RUN, "may_run", lambda: ask(api.ACTION_MANAGE, "may_manage", reply))

    @exported()
    def Reload(self, caller: Caller, call: _Call) -> None:
        """Read the declared jails' files again and make root's jails agree: created, recreated, removed,
        errors (see keeper.py)."""
        if caller.inside is not None:
            raise NotAllowed("a program inside a jail may not reload the declared jails")
        self.keeper.reload(call.later(lambda summary: call.reply(to_variant_dict(summary))))

    # -- signals: declared here (introspection), sent by notify() to their audience only ------

    @dbus.service.signal(api.INTERFACE, signature="s")
    def JailAdded(self, name: str) -> None:
        _never_broadcast()

    @dbus.service.signal(api.INTERFACE, signature="s")
    def JailRemoved(self, name: str) -> None:
        _never_broadcast()

    @dbus.service.signal(api.INTERFACE, signature="sb")
    def VpnChanged(self, name: str, up: bool) -> None:
        """A VPN jail's interface went down or away (up=False), or came back."""
        _never_broadcast()


def _answers(connection: dbus.connection.Connection, message: dbus.lowlevel.Message,
             out_signature: str) -> tuple[Respond, Callable[[BusError], None]]:
    """Reply and error senders for a method call that do not hold its message.

    libdbus keeps the descriptors that came with a message open until the
    message is freed, and dbus-python's own reply callbacks hold it: kept
    while polkit decides (minutes, with a password prompt), the caller's
    pipes would be open twice over, beside the descriptor array's copies.
    These send a return or an error message prepared now, which carries no
    descriptors, and the call's message goes once dispatch returns.
    """
    if message.get_no_reply():  # the caller wants no answer
        return (lambda *values: None), (lambda error: None)
    answer = dbus.lowlevel.MethodReturnMessage(message)
    failure = dbus.lowlevel.ErrorMessage(message, api.ERROR_FAILED, None)  # named when it is sent

    def reply(*values) -> None:
        answer.append(*values, signature=out_signature)
        connection.send_message(answer)

    def error(exc: BusError) -> None:
        failure.set_error_name(exc.get_dbus_name())
        failure.append(exc.get_dbus_message(), signature="s")
        connection.send_message(failure)

    return reply, error


class _Call:
    """The reply and error senders of one method call, dropped once used.

    answered() runs once, with the answer: it gives the caller's
    pending-call slot back (HelperService._admit).
    """

    def __init__(self, reply: Respond, error: Callable[[BusError], None]) -> None:
        self._reply: Respond | None = reply
        self._error: Callable[[BusError], None] | None = error
        self.answered: Callable[[], None] = lambda: None

    def _take(self) -> tuple[Respond | None, Callable[[BusError], None] | None]:
        """The senders, for the one answer; None after it."""
        taken = self._reply, self._error
        if self._reply is not None:
            self._reply = self._error = None
            answered, self.answered = self.answered, lambda: None
            answered()
        return taken

    def reply(self, *values) -> None:
        reply, _error = self._take()
        if reply is not None:
            reply(*values)

    def fail(self, exc: BaseException) -> None:
        _reply, error = self._take()
        if error is not None:
            error(as_dbus_error(exc))

    def later(self, callback: Callable[..., None]) -> Callable[..., None]:
        """`callback` for a later event; what it raises fails the call instead of vanishing."""
        def guarded(*args) -> None:
            try:
                callback(*args)
            except Exception as exc:
                self.fail(exc)
        return guarded


_VERBS = {api.ACTION_RUN: "run programs in jails", api.ACTION_INSPECT: "inspect jails"}


def _never_broadcast() -> None:
    """Stops dbus-python's emission to the whole bus (it calls the declared method first)."""
    raise RuntimeError("the helper's signals go to the jail's owner and managers only: use notify()")


def _managing(caller: Caller) -> Caller:
    return dataclasses.replace(caller, may_manage=True)


def _discard(passed: list[dbus.types.UnixFd]) -> None:
    """Close descriptors of a call that will not run (not left to the collector)."""
    _close([fd.take() for fd in passed])


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
