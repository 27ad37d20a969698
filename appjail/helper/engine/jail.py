"""A jail as the engine holds it: its record, its addresses, and what is derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ...model import JailSpec, Publish
from ...ovpnconf import OpenVpnConfig
from ...wgconf import WireGuardConfig
from ..firewall import jailpolicy, rules
from ..kernel.hostports import HeldPort
from .pool import JailAddressing
from .state import JailRecord

JailId = tuple[int, str]  # (owner uid, name): a jail in the registry
NAT, TUNNEL = "nat", "tunnel"  # a jail's kinds (resources.KINDS: the steps of each)


@dataclass
class Repairs:
    """How often the host's side of a jail's rules was put back after a host tool removed it (see repair)."""

    count: int = 0
    last: float | None = None  # epoch seconds
    what: str = ""  # what had changed, as the helper's log line says

    def note(self, when: float, what: str) -> None:
        self.count += 1
        self.last, self.what = when, what

    def as_dict(self) -> dict:
        """As `ls --json` and `inspect --json` show it (last 0: never; the bus carries no null)."""
        return {"count": self.count, "last": int(self.last or 0), "what": self.what}


@dataclass
class Jail:
    record: JailRecord
    addressing: JailAddressing | None  # a tunnel jail takes no address from the pool
    dns: tuple[str, ...]
    secret: WireGuardConfig | OpenVpnConfig | None = None  # a tunnel's keys, only while it is being made
    held_ports: list[HeldPort] | None = None  # None: not held by this helper yet (adopted)
    ports_not_held: tuple[Publish, ...] = ()  # published, not bound again after a restart (see PublishedPorts)
    connecting: bool = False  # its tunnel has not come up yet (OpenVPN): see Engine.connected
    pool: str = ""  # the engine's address pool (jailpolicy)
    repairs: Repairs = field(default_factory=lambda: Repairs())
    forwarder: Any = None  # its forwarded port's thread (portforward.Forwarder), with forward_port
    forwarded_port: int | None = None  # a --vpn jail's, in its firewall rules (see Engine.forward_to)
    _rules: rules.JailRules | None = field(default=None, repr=False)  # firewall_rules, made once per port

    @property
    def kind(self) -> str:
        return NAT if self.tunnel is None else TUNNEL

    @property
    def tunnel(self) -> dict | None:
        """What may be shown of a tunnel jail's tunnel (type, endpoint, addresses, peer)."""
        return self.record.tunnel

    @property
    def tunnel_ifname(self) -> str:
        return self.record.kernel_name

    @property
    def address(self) -> str:
        """The jail's own IPv4 address: its veth's, or its tunnel's."""
        if self.addressing is not None:
            return self.addressing.jail_address
        # an OpenVPN tunnel's address is the server's to push: none before it first came up
        return next((a.split("/")[0] for a in self.tunnel["addresses"] if ":" not in a), "-")

    @property
    def spec(self) -> JailSpec:
        return self.record.spec

    @property
    def settings(self) -> JailSpec:
        """The spec as the jail has it: `dns` the servers it got (the host's when none were asked)."""
        return self.spec._replace(dns=self.dns)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def id(self) -> JailId:
        return self.owner_uid, self.name

    @property
    def netns(self) -> str:
        return self.record.kernel_name

    @property
    def host_ifname(self) -> str:
        return self.record.kernel_name

    @property
    def owner_uid(self) -> int:
        return self.record.owner_uid

    @cached_property
    def policy(self) -> jailpolicy.JailPolicy:
        """What the jail's own namespace refuses (see jailpolicy)."""
        assert self.addressing is not None, "a tunnel jail has no veth to refuse anything on"
        return jailpolicy.build(self.spec, self.host_ifname, self.addressing.jail_address, self.pool)

    @property
    def firewall_rules(self) -> rules.JailRules:
        assert self.addressing is not None, "a tunnel jail has no firewall rules"
        if self._rules is None or self._rules.forwarded_port != self.forwarded_port:
            self._rules = rules.build_jail_rules(self.spec, self.host_ifname, str(self.addressing.network),
                                                 self.addressing.jail_address, self.forwarded_port)
        return self._rules
