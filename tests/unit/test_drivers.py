"""The in-memory fakes are the drivers' Protocols, and so are the machine's own modules.

Each Protocol method must exist on its fake and on the real driver with the
same parameters (names, order, kinds; more only with a default), so a test on
a fake means the call the engine or the supervisor makes on the machine.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import pytest

from appjail.helper.engine import drivers
from appjail.helper.firewall.backends import FirewallBackend
from appjail.helper.firewall.nft import NftablesBackend
from appjail.helper.firewall.xt import XtablesBackend

from .fakehost import (FakeConntrack, FakeFirewall, FakeKernel, FakeLauncher, FakeOpenvpn, FakePolicy, FakePorts,
                       FakeTunnels)

MACHINE = drivers.machine()
CASES = [
    (drivers.Kernel, FakeKernel, MACHINE.kernel),
    (drivers.WireGuard, FakeTunnels, MACHINE.wireguard),
    (drivers.OpenVpn, FakeOpenvpn, MACHINE.openvpn),
    (drivers.Ports, FakePorts, MACHINE.ports),
    (drivers.Conntrack, FakeConntrack, MACHINE.conntrack),
    (drivers.Launcher, FakeLauncher, MACHINE.launcher),
    (drivers.JailPolicies, FakePolicy, MACHINE.policy),
    (FirewallBackend, FakeFirewall, NftablesBackend),
    (FirewallBackend, FakeFirewall, XtablesBackend),
]


def members(protocol: type) -> dict[str, inspect.Signature | None]:
    """The protocol's methods (with their signatures, self left out) and attributes (None)."""
    found: dict[str, inspect.Signature | None] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or klass is Protocol or not getattr(klass, "_is_protocol", False):
            continue
        found |= {name: None for name in getattr(klass, "__annotations__", {})}
        found |= {name: _parameters(value) for name, value in vars(klass).items()
                  if inspect.isfunction(value) and not name.startswith("_")}
    return found


def _parameters(function) -> inspect.Signature:
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()
                  if p.name != "self"]
    return signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)


@pytest.mark.parametrize(("protocol", "fake", "real"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_the_fake_and_the_real_driver_have_every_member_of_the_protocol(protocol, fake, real):
    for name, signature in members(protocol).items():
        for implementation in (fake, real):
            assert hasattr(implementation, name) or name in getattr(implementation, "__annotations__", {}), \
                f"{implementation.__name__} has no {name}"
            if signature is not None:
                assert compatible(_parameters(getattr(implementation, name)), signature), \
                    f"{implementation.__name__}.{name}"


def compatible(implementation: inspect.Signature, protocol: inspect.Signature) -> bool:
    """The protocol's parameters first, in order, by name and kind; any more have a default."""
    have, want = list(implementation.parameters.values()), list(protocol.parameters.values())
    return ([(p.name, p.kind) for p in have[:len(want)]] == [(p.name, p.kind) for p in want]
            and all(p.default is not inspect.Parameter.empty for p in have[len(want):]))


def test_a_protocol_with_a_missing_method_is_noticed():
    class Lacking(FakeConntrack):
        connections = None  # type: ignore[assignment]

    with pytest.raises(Exception):
        test_the_fake_and_the_real_driver_have_every_member_of_the_protocol(drivers.Conntrack, Lacking, MACHINE.conntrack)
