"""Forwarding flags: what was switched on is put back, every recorded key."""

from __future__ import annotations

import pytest

from appjail.helper.firewall import forwarding
from .fakehost import FakeFirewall, FakeKernel


@pytest.fixture
def kernel() -> FakeKernel:
    fake = FakeKernel([], host_links=("lo", "eth0", "wg0"))
    fake.sysctls["net/ipv4/conf/all/forwarding"] = "0"
    return fake


@pytest.fixture
def sysctls(kernel) -> dict[str, str]:
    return kernel.sysctls


def _record(tmp_path, kernel) -> forwarding.Forwarding:
    return forwarding.Forwarding(tmp_path / "forwarding.json", FakeFirewall([]), kernel)


def test_restore_puts_back_every_recorded_key_even_one_not_listed(tmp_path, kernel, sysctls):
    before = dict(sysctls)
    record = _record(tmp_path, kernel)
    record.enable(["all", "wg0"], ["lo", "eth0", "wg0"])
    assert sysctls["net/ipv4/conf/all/forwarding"] == "1"
    record.restore(["lo", "eth0"])  # neither "all" nor wg0 is a listed link now
    assert sysctls == before
    assert not record.active()


def test_restore_gives_interfaces_born_meanwhile_the_old_default(tmp_path, kernel, sysctls):
    record = _record(tmp_path, kernel)
    record.enable(["wg0"], ["lo", "eth0", "wg0"])
    sysctls["net/ipv4/conf/tun1/forwarding"] = "1"  # born with the switched-on default
    record.restore(["lo", "eth0", "wg0", "tun1"])
    assert sysctls["net/ipv4/conf/tun1/forwarding"] == "0"
    assert set(sysctls.values()) == {"0"}
