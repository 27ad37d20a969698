"""The in-memory machine (tests/unit/fakehost.py) as fixtures: each test gets its own, and an engine on it."""

from __future__ import annotations

import pytest

from appjail.helper.engine.drivers import Drivers
from appjail.helper.engine.engine import Engine
from appjail.helper.firewall.choice import Choice

from .fakehost import (FakeConntrack, FakeCoexist, FakeFirewall, FakeKernel, FakeLauncher, FakeOpenvpn, FakePolicy,
                       FakePorts, FakeTunnels)


@pytest.fixture
def ops() -> list[str]:
    return []


@pytest.fixture
def kernel(ops) -> FakeKernel:
    return FakeKernel(ops)


@pytest.fixture
def fw(ops) -> FakeFirewall:
    return FakeFirewall(ops)


@pytest.fixture
def coexist(ops) -> FakeCoexist:
    return FakeCoexist(ops)


@pytest.fixture
def tunnels(ops, kernel) -> FakeTunnels:
    return FakeTunnels(ops, kernel)


@pytest.fixture
def openvpn(ops, kernel, tunnels) -> FakeOpenvpn:
    return FakeOpenvpn(ops, kernel, tunnels)


@pytest.fixture
def ports(ops) -> FakePorts:
    return FakePorts(ops, host_sockets={("tcp", 22)})


@pytest.fixture
def conntrack(ops) -> FakeConntrack:
    return FakeConntrack(ops)


@pytest.fixture
def launcher(ops, kernel) -> FakeLauncher:
    return FakeLauncher(ops, kernel)


@pytest.fixture
def policy(ops, kernel) -> FakePolicy:
    return FakePolicy(ops, kernel)


@pytest.fixture
def drivers(kernel, tunnels, openvpn, ports, conntrack, launcher, policy) -> Drivers:
    return Drivers(kernel, tunnels, openvpn, ports, conntrack, launcher, policy)


@pytest.fixture
def make_engine(tmp_path, drivers, fw, coexist):
    """An engine over the fakes; a second one on the same state is a restarted helper."""
    def make(**settings) -> Engine:
        settings.setdefault("resolve", lambda host, port: [])
        settings.setdefault("drivers", drivers)
        return Engine(run_dir=tmp_path / "run", etc_netns=tmp_path / "etc-netns",
                      firewall_choice=Choice("fake", "unit test"), coexist=coexist,
                      firewall_backend=fw, **settings)
    return make


@pytest.fixture
def engine(make_engine) -> Engine:
    return make_engine()
