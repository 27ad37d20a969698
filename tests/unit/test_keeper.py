"""The Keeper: declared jails made, kept, made again and removed as their files say (bus/keeper.py),
with the Supervisor and the engine replaced by in-memory stand-ins."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from appjail.helper.bus.keeper import Keeper
from appjail.helper.engine.engine import JailError


class FakeEngine:
    def __init__(self) -> None:
        self.jails: dict[tuple[int, str], SimpleNamespace] = {}
        self.dead_tunnels: set[str] = set()

    def list(self) -> list[SimpleNamespace]:
        return list(self.jails.values())

    def tunnel_running(self, jail: SimpleNamespace) -> bool:
        return jail.name not in self.dead_tunnels


class FakeSupervisor:
    """Makes and removes at once; `refuse` names jails whose making fails (their tunnel does not come up)."""

    def __init__(self) -> None:
        self.engine = FakeEngine()
        self.root = SimpleNamespace(uid=0)
        self.declared_sources: dict = {}
        self.refuse: set[str] = set()
        self.made: list[str] = []

    def keep(self, spec, tunnels, done) -> None:
        if spec.name in self.refuse:
            return done(JailError(f"could not create jail {spec.name!r}: openvpn ended before its tunnel was up"))
        self.made.append(spec.name)
        self.engine.jails[(0, spec.name)] = SimpleNamespace(name=spec.name, owner_uid=0,
                                                           tunnel={"type": "openvpn"} if tunnels else None)
        done(None)

    def stop(self, caller, name, done) -> None:
        del self.engine.jails[(caller.uid, name)]
        done(None)


@pytest.fixture
def jails_d(tmp_path):
    directory = tmp_path / "jails.d"
    directory.mkdir()
    directory.chmod(0o755)
    return directory


def declare(directory, name: str, text: str = "") -> None:
    path = directory / f"{name}.toml"
    path.write_text(text)
    path.chmod(0o644)


def reload(keeper: Keeper) -> dict:
    answers = []
    keeper.reload(answers.append)
    (answer,) = answers
    return answer


def test_declared_jails_are_made_listed_with_their_files_and_bad_files_reported(jails_d, tmp_path):
    declare(jails_d, "web")
    declare(jails_d, "bad", "vpn = 1\n")
    supervisor = FakeSupervisor()
    keeper = Keeper(supervisor, jails_d, tmp_path)
    answer = reload(keeper)
    assert answer["created"] == ["web"] and supervisor.made == ["web"]
    assert answer["errors"] == [f'{jails_d / "bad.toml"}: vpn: expected a string such as "wg0"']
    assert supervisor.declared_sources == {(0, "web"): str(jails_d / "web.toml")}


def test_a_jail_gone_or_whose_tunnel_ended_is_made_again_and_one_that_fails_is_tried_again(jails_d, tmp_path,
                                                                                         monkeypatch):
    declare(jails_d, "web")
    declare(jails_d, "vpn")
    monkeypatch.setattr("appjail.helper.engine.declared.tunnels",
                        lambda d: {"openvpn": object()} if d.name == "vpn" else {})
    supervisor = FakeSupervisor()
    keeper = Keeper(supervisor, jails_d, tmp_path)
    reload(keeper)
    del supervisor.engine.jails[(0, "web")]  # stopped by hand, or lost
    supervisor.engine.dead_tunnels.add("vpn")  # its daemon ended
    supervisor.refuse.add("vpn")  # and its server does not answer yet
    keeper._again()
    assert supervisor.made[-1:] == ["web"] and (0, "vpn") not in supervisor.engine.jails
    (error,) = keeper.errors.values()
    assert "jail 'vpn' could not be made again: could not create jail 'vpn': openvpn ended" in error
    supervisor.engine.dead_tunnels.clear()
    supervisor.refuse.clear()  # the tunnel's server is back
    keeper._again()
    assert (0, "vpn") in supervisor.engine.jails and keeper.errors == {}


def test_a_restarted_helper_keeps_unchanged_jails_and_remakes_changed_ones(jails_d, tmp_path):
    declare(jails_d, "same")
    declare(jails_d, "changed")
    supervisor = FakeSupervisor()
    reload(Keeper(supervisor, jails_d, tmp_path))
    declare(jails_d, "changed", "no_lan = true\n")  # while no helper ran
    supervisor.made.clear()
    answer = reload(Keeper(supervisor, jails_d, tmp_path))  # the next helper: the jails were adopted
    assert answer["recreated"] == ["changed"] and answer["created"] == [] and supervisor.made == ["changed"]


def test_a_removed_file_removes_its_jail_and_roots_own_jails_stay(jails_d, tmp_path):
    declare(jails_d, "web")
    supervisor = FakeSupervisor()
    keeper = Keeper(supervisor, jails_d, tmp_path)
    reload(keeper)
    supervisor.engine.jails[(0, "by-hand")] = SimpleNamespace(name="by-hand", owner_uid=0, tunnel=None)
    (jails_d / "web.toml").unlink()
    assert reload(keeper)["removed"] == ["web"]
    assert list(supervisor.engine.jails) == [(0, "by-hand")] and supervisor.declared_sources == {}
