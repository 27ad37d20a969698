"""Who may do what: the helper's access rules, apart from the bus and the machine.

A caller acts on its own jails; on another user's only with
org.appjail.manage (polkit said so: `may_manage`); from inside a jail only
on that jail; from any other network namespace than the host's not at all.
Root and managers are not held to the per-user jail limit; publishing a
privileged host port is a manager's decision. Each rule raises NotAllowed
(or JailNotFound) with one sentence for the caller.
"""

from __future__ import annotations

import dataclasses
import pwd
from collections.abc import Mapping
from dataclasses import dataclass

from ... import interface as api
from ...model import parse_jail_address, validate_publish
from ..engine.engine import JailNotFound
from ..engine.jail import JailId
from ..kernel import hostports, launch
from ..kernel.netns import NamespaceId
from .requests import RunRequest


@dataclass(frozen=True)
class Caller(launch.Identity):
    """The identity a program is launched with, plus the bus connection it came from.

    pid: the process at the other end of that connection, as the bus daemon
    saw it when it connected (0: the bus did not say).
    """

    sender: str = ""
    may_manage: bool = False
    netns: NamespaceId | None = None  # the calling process's network namespace
    netns_ours: bool = True           # owned by the helper's user namespace (see process_netns)
    inside: tuple[int, str] | None = None  # the jail (owner, name) whose namespace that is (confine)
    context: launch.ProcessContext | None = None  # what a program it launches keeps of it


class NotAllowed(Exception):
    """The caller may not act on this jail or process."""


def publish_needs_manage(request: RunRequest) -> str | None:
    """Why a Run needs org.appjail.manage (one sentence), or None.

    Host ports below net.ipv4.ip_unprivileged_port_start are root's on this
    host (22, 80, 443...): publishing one is root's decision too.
    """
    low = hostports.privileged_ports(validate_publish(request.options.get("publish", ())))
    if not low:
        return None
    ports = ", ".join(f"{p.host_port}/{p.proto}" for p in low)
    return (f"publishing privileged host port {ports} needs polkit action {api.ACTION_MANAGE}")


def confine(caller: Caller, jails: Mapping[NamespaceId, JailId], host: NamespaceId) -> Caller:
    """`caller` with the jail it runs inside, if any; refused from any other namespace but the host's.

    jails: each jail's network namespace; host: the helper's own. A program
    inside a jail may act only within that jail: a new jail or another one
    would be a way out beside the jail's own (a --vpn jail's kill switch,
    its deny rules). A program in any other network namespace than the
    helper's was put there to keep it off this network (PrivateNetwork=, a
    sandbox's --unshare-net, ip netns exec): a jail, which leads to this
    network, would be its way out.
    """
    if not caller.netns_ours:
        raise NotAllowed("appjail does not answer programs in a network namespace they made "
                         "themselves (unshare -n): it may be inside a jail")
    inside = jails.get(caller.netns)
    if inside is None and caller.netns != host:
        raise NotAllowed("appjail does not answer programs in another network namespace than the "
                         "host's (a service's PrivateNetwork=, a sandbox without network): a jail "
                         "would give them the network they were kept from")
    return dataclasses.replace(caller, inside=inside)


def unlimited(caller: Caller) -> bool:
    """Root and callers allowed org.appjail.manage may have more jails than the per-user limit."""
    return caller.uid == 0 or caller.may_manage

def check_inside(caller: Caller, jail_id: JailId | None, verb: str) -> None:
    """Refuse a caller inside a jail to act on another one (None: a new one)."""
    if caller.inside is not None and jail_id != caller.inside:
        target = "a new jail" if jail_id is None else f"jail {jail_id[1]!r}"
        raise NotAllowed(f"a program inside jail {caller.inside[1]!r} may not {verb} {target}, "
                         f"only its own")

def resolve(caller: Caller, address: object) -> JailId:
    """The jail an address names: NAME the caller's own, USER/NAME or UID/NAME that owner's."""
    owner, name = parse_jail_address(address)
    if owner is None:
        return caller.uid, name
    if isinstance(owner, str):
        try:
            owner = pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise JailNotFound(f"no user named {owner!r}") from None
    return owner, name

def allowed(caller: Caller, address: str) -> JailId:
    """The jail an address names, if the caller may act on it: its own, or any with org.appjail.manage."""
    owner_uid, name = resolve(caller, address)
    if owner_uid != caller.uid and not caller.may_manage:
        raise NotAllowed(f"jail {address!r} belongs to another user")
    return owner_uid, name


def check_own_process(caller: Caller, pid: int, process: tuple[int, JailId] | None) -> None:
    """Refuse a signal to anything but a running program of the caller's (process: its owner and jail)."""
    if process is None or process[0] != caller.uid:
        raise NotAllowed(f"process {pid} is not a running program of yours")
    check_inside(caller, process[1], "signal programs in")
