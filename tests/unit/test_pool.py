import ipaddress

import pytest

from appjail.helper.engine.pool import TABLE_BASE, AddressPool, PoolExhausted


def net(text):
    return ipaddress.IPv4Network(text)


def test_first_slot_addresses():
    addressing = AddressPool().allocate([], [])
    assert str(addressing.network) == "10.231.0.0/30"
    assert addressing.host_address == "10.231.0.1"
    assert addressing.jail_address == "10.231.0.2"
    assert addressing.table == TABLE_BASE


def test_used_slots_are_skipped():
    assert AddressPool().allocate([0, 1], []).slot == 2


def test_host_routes_are_avoided_but_default_route_is_not_a_collision():
    pool = AddressPool("10.231.0.0/28")
    routes = [net("0.0.0.0/0"), net("10.231.0.0/29"), net("192.0.2.0/24")]
    addressing = pool.allocate([], routes)
    assert str(addressing.network) == "10.231.0.8/30"


def test_route_covering_the_whole_pool_exhausts_it():
    with pytest.raises(PoolExhausted):
        AddressPool("10.231.0.0/28").allocate([], [net("10.0.0.0/8")])


def test_exhaustion():
    pool = AddressPool("10.231.0.0/29")
    with pytest.raises(PoolExhausted):
        pool.allocate([0, 1], [])


def test_pool_must_hold_a_subnet():
    with pytest.raises(ValueError):
        AddressPool("10.231.0.0/31")


def test_a_freed_slot_is_held_back_for_the_quarantine():
    now = [100.0]
    pool = AddressPool("10.231.0.0/28", quarantine=60, clock=lambda: now[0])
    pool.release(0)
    assert pool.allocate([1], []).slot == 2  # slot 0 is free but was just used
    now[0] += 59.9
    assert pool.allocate([1, 2], []).slot == 3
    with pytest.raises(PoolExhausted, match="1 held back for 60 s after use"):
        pool.allocate([1, 2, 3], [])
    now[0] += 0.1
    assert pool.allocate([1], []).slot == 0
