"""Programs in transient scopes of their users' slices, under a real systemd.

The lab's systemd (appjail.lab.systemd) runs the system bus and polkitd;
the helper and the test users run in its namespaces, so it takes their pids
as they are. Without systemd (every other helper test) programs run
unscoped, as before.
"""

from __future__ import annotations

import json
import pwd
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appjail.lab.helper import LabHelper
from appjail.lab.systemd import LabSystemd

from ..busfixture import BUS_POLICY, polkit_files_installed
from .conftest import running_helper, serving
from .helperlab import DNS, MEMBER, OTHER_MEMBER, appjail_argv, in_helper_netns, user_popen_kwargs, wait_until
from .test_tunnel import users_file


@pytest.fixture(scope="module")
def systemd(lab) -> Iterator[LabSystemd]:  # the lab: /run/netns is a shared mount by then
    with polkit_files_installed(), LabSystemd([BUS_POLICY]) as lab_systemd:
        yield lab_systemd


@pytest.fixture
def scoped_helper(lab, systemd, users, tmp_path) -> Iterator[LabHelper]:
    with running_helper(lab, systemd.address, tmp_path, enter_argv=systemd.enter_argv) as process:
        yield process


def appjail_inside(systemd: LabSystemd, user: str, *args: str) -> subprocess.CompletedProcess:
    """`appjail ARGS` as USER, from a process in systemd's namespaces."""
    entry = pwd.getpwnam(user)
    kwargs = user_popen_kwargs(user, systemd.address)
    argv = systemd.enter_argv(in_helper_netns(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                                               "--init-groups", "--", *appjail_argv(*args)]))
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env=kwargs["env"], cwd=kwargs["cwd"])


def systemctl(systemd: LabSystemd, *args: str) -> str:
    return subprocess.run(systemd.enter_argv(["systemctl", "--no-pager", *args]), capture_output=True,
                          text=True, check=True, timeout=10).stdout


def test_program_runs_in_a_scope_of_its_users_slice_until_it_ends(scoped_helper, systemd, users):
    uid = users.uid(MEMBER)
    result = appjail_inside(systemd, MEMBER, "run", "--dns", DNS, "--", "cat", "/proc/self/cgroup")
    assert result.returncode == 0, result.stderr + systemd.log()
    scope = rf"/user\.slice/user-{uid}\.slice/(appjail-[a-z0-9-]+\.scope)"
    placed = re.search(rf"^\d+:name=systemd:{scope}$", result.stdout, re.MULTILINE)
    assert placed, result.stdout
    # the pids controller too: the slice's task limit (user-.slice's TasksMax) bounds the program
    assert re.search(rf"^\d+:pids:{scope}$", result.stdout, re.MULTILINE), result.stdout
    assert systemctl(systemd, "show", "-p", "TasksMax", f"user-{uid}.slice").strip() != "TasksMax=infinity"
    unit = placed.group(1)
    assert wait_until(lambda: unit not in systemctl(systemd, "list-units", "--all", "appjail-*"), 5), \
        systemctl(systemd, "status", unit)


def test_a_scope_systemd_refuses_keeps_the_program_from_starting_and_leaves_nothing(scoped_helper, systemd,
                                                                                   users):
    systemd.mask(f"user-{users.uid(OTHER_MEMBER)}.slice")
    marker = Path(pwd.getpwnam(OTHER_MEMBER).pw_dir) / "ran-unscoped"
    marker.unlink(missing_ok=True)
    result = appjail_inside(systemd, OTHER_MEMBER, "run", "--dns", DNS, "--", "touch", str(marker))
    assert result.returncode == 125, result.stderr
    assert "systemd" in result.stderr and "scope" in result.stderr and len(result.stderr.splitlines()) == 1, \
        result.stderr
    assert not marker.exists(), "the program did not run outside its user's slice"
    listed = appjail_inside(systemd, OTHER_MEMBER, "ls", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], "the jail made for it is gone"


def test_a_jails_tunnel_daemon_runs_in_a_scope_of_its_owners_slice(scoped_helper, systemd, users, lab):
    uid = users.uid(MEMBER)
    path = users_file(lab.wg_peer("203.0.113.31"), "scoped.conf")
    made = appjail_inside(systemd, MEMBER, "run", "--keep", "--name", "wgscope", "--wireguard", path, "--", "true")
    assert made.returncode == 0, made.stderr + systemd.log()
    try:
        (daemon,) = serving("wireguard-go", "aj-wgscope")
        # seen from the machine, the lab systemd's tree is below a folder of its own
        in_slice = rf"^\d+:name=systemd:/(.*/)?user\.slice/user-{uid}\.slice/appjail-[a-z0-9-]+\.scope$"
        assert wait_until(lambda: re.search(in_slice, Path(f"/proc/{daemon}/cgroup").read_text(), re.MULTILINE),
                          5), Path(f"/proc/{daemon}/cgroup").read_text()
    finally:
        assert appjail_inside(systemd, MEMBER, "stop", "wgscope").returncode == 0
