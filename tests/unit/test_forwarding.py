"""Forwarding flags: what was switched on is put back, every recorded key."""

from __future__ import annotations

import pytest

from appjail.helper import forwarding


@pytest.fixture
def sysctls(monkeypatch) -> dict[str, str]:
    values = {f"net/ipv4/conf/{i}/forwarding": "0" for i in ("all", "default", "lo", "eth0", "wg0")}

    def read(key: str) -> str:
        if key not in values:
            raise FileNotFoundError(key)
        return values[key]

    def write(key: str, value: str) -> None:
        read(key)
        values[key] = value

    monkeypatch.setattr(forwarding, "read_sysctl", read)
    monkeypatch.setattr(forwarding, "write_sysctl", write)
    monkeypatch.setattr(forwarding.firewall, "set_guard", lambda host_forwarding: None)
    return values


def test_restore_puts_back_every_recorded_key_even_one_not_listed(tmp_path, sysctls):
    before = dict(sysctls)
    record = forwarding.Forwarding(tmp_path / "forwarding.json")
    record.enable(["all", "wg0"], ["lo", "eth0", "wg0"])
    assert sysctls["net/ipv4/conf/all/forwarding"] == "1"
    record.restore(["lo", "eth0"])  # neither "all" nor wg0 is a listed link now
    assert sysctls == before
    assert not record.active()


def test_restore_gives_interfaces_born_meanwhile_the_old_default(tmp_path, sysctls):
    record = forwarding.Forwarding(tmp_path / "forwarding.json")
    record.enable(["wg0"], ["lo", "eth0", "wg0"])
    sysctls["net/ipv4/conf/tun1/forwarding"] = "1"  # born with the switched-on default
    record.restore(["lo", "eth0", "wg0", "tun1"])
    assert sysctls["net/ipv4/conf/tun1/forwarding"] == "0"
    assert set(sysctls.values()) == {"0"}
