"""`appjail-demo` end to end: its own lab, bus, polkitd, helper and temporary user."""

import pwd

import pytest

from appjail.helper.kernel.netns import list_namespaces
from appjail.lab.demo import DEMO_USER, DemoError, run_demo

from ..busfixture import BUS_POLICY, TestUsers, polkit_files_installed
from .helperlab import USER_CODE, USER_PYTHON, remove_user_code, stage_user_code


@pytest.fixture
def installed_like():
    """What the install script provides: the group, the polkit files; the code for users."""
    stage_user_code()
    try:
        with TestUsers(), polkit_files_installed():
            yield
    finally:
        remove_user_code()


def test_demo_shows_the_tunnel_and_the_kill_switch_and_leaves_nothing(installed_like, monkeypatch):
    monkeypatch.delenv("SUDO_USER", raising=False)
    lines: list[str] = []
    run_demo(say=lines.append, cli_python=USER_PYTHON, cli_pythonpath=str(USER_CODE),
             bus_policies=[BUS_POLICY])
    text = "\n".join(lines)
    assert "the web server saw: client=203.0.113.2" in text
    assert "packets on the uplink outside the tunnel: 0" in text
    assert "the kill switch held" in text
    assert list_namespaces("aj-") == [] and list_namespaces("ajdemo") == []
    with pytest.raises(KeyError):
        pwd.getpwnam(DEMO_USER)


def test_demo_refuses_to_run_next_to_existing_jails(monkeypatch):
    from appjail.helper.kernel import netns
    monkeypatch.setattr(netns, "list_namespaces", lambda prefix: ["aj-firefox"])
    with pytest.raises(DemoError, match=r"jails exist \(aj-firefox\)"):
        run_demo(say=lambda line: None)
