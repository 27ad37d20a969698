"""appjail-helper behind the real bus and polkitd, used as test users would."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import pwd
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appjail.helper.bus.supervisor import MAX_STARTING_PER_USER
from appjail.helper.kernel.netns import create_namespace, delete_namespace, list_namespaces, namespace_pids, read_sysctl
from appjail.lab import in_netns
from appjail.lab.bus import PrivateSystemBus
from appjail.lab.helper import LabHelper
from appjail.lab.netns import netns_exec_argv
from appjail.model import spec_options

from ..busfixture import BUS_POLICY
from .helperlab import (DNS, MEMBER, OTHER_MEMBER, OUTSIDER, USER_PYTHON, appjail, appjail_argv,
                        in_helper_netns, jails, ls_seconds, open_fds, signal_listener, signals_seen,
                        unanswering_fuse, user_popen_kwargs, wait_until)


def test_member_runs_curl_through_the_vpn_as_themselves(helper, lab):
    result = appjail(helper, MEMBER, "run", "--vpn", lab.wg_ifname, "--dns", DNS, "--",
                     "curl", "-sS", "http://www.lab.test/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n"


def test_program_runs_with_the_callers_identity_and_nothing_more(helper, users):
    script = ("id -u; id -G; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status;"
              " ls /proc/self/fd; pwd")
    result = appjail(helper, MEMBER, "run", "--dns", DNS, "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert int(lines[0]) == users.uid(MEMBER)
    assert sorted(map(int, lines[1].split())) == sorted(users.gids(MEMBER))
    status = dict(line.split(":\t") for line in lines[2:8])
    assert status["CapEff"] == status["CapPrm"] == status["CapInh"] == status["CapAmb"] == "0" * 16
    assert status["NoNewPrivs"] == "1"
    # ls lists its own directory descriptor too; sh opened none of its own
    fds = lines[8:-1]
    assert fds[:3] == ["0", "1", "2"] and len(fds) == 4, fds
    assert lines[-1] == os.path.expanduser(f"~{MEMBER}")



def as_logged_in_user(helper, user: str, shell_setup: str, *args: str) -> subprocess.CompletedProcess:
    """`appjail ARGS` as USER, from a shell that ran SHELL_SETUP, with USER's audit loginuid.

    The way a login would: root writes /proc/self/loginuid (allowed while it
    is unset), then becomes the user; the loginuid is inherited from then on.
    """
    entry = pwd.getpwnam(user)
    kwargs = user_popen_kwargs(user, helper.bus_address)
    argv = in_helper_netns([
        "sh", "-c", 'echo "$0" > /proc/self/loginuid && exec "$@"', str(entry.pw_uid),
        "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--",
        "sh", "-c", f'{shell_setup}; exec "$@"', "sh", *appjail_argv(*args)])
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                          env=kwargs["env"], cwd=kwargs["cwd"])


def test_program_keeps_the_callers_umask_limits_and_audit_loginuid(helper, users):
    assert os.path.exists("/proc/self/loginuid"), "this kernel has no audit: loginuid untestable"
    report = "umask; ulimit -n; ulimit -p; cat /proc/self/loginuid"
    result = as_logged_in_user(helper, MEMBER, "umask 077; ulimit -n 777; ulimit -p 555",
                               "run", "--dns", DNS, "--", "sh", "-c", report)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0077", "777", "555", str(users.uid(MEMBER))]
    # a caller without a loginuid (as the helper here): the program has none either
    plain = appjail(helper, MEMBER, "run", "--dns", DNS, "--", "cat", "/proc/self/loginuid")
    assert plain.stdout == "4294967295", plain.stderr

# The program's session keyring: "ID TYPE;UID;GID;PERM;DESCRIPTION" (keyctl(2), x86_64's number).
SESSION_KEYRING = """
import ctypes
libc = ctypes.CDLL(None)
libc.syscall.restype = ctypes.c_long
keyring = libc.syscall(250, 0, -3, 0)  # KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING
text = ctypes.create_string_buffer(256)
libc.syscall(250, 6, keyring, text, 256)  # KEYCTL_DESCRIBE
print(keyring, text.value.decode())
"""
# What the helper runs in, as systemd makes it for a service (KeyringMode=private): a session
# keyring of its own, which a program it starts must not share.
HELPER_KEYRING = "appjail-test-helper"
JOIN_AND_EXEC = ("import ctypes, os, sys; libc = ctypes.CDLL(None); "
                 f"assert libc.syscall(250, 1, b'{HELPER_KEYRING}') > 0; "  # KEYCTL_JOIN_SESSION_KEYRING
                 "os.execvp(sys.argv[1], sys.argv[1:])")


def test_each_program_gets_a_session_keyring_of_its_own_owned_by_its_user(helper, users):
    helper.kill(signal.SIGTERM)
    helper.enter_argv = lambda argv: [USER_PYTHON, "-c", JOIN_AND_EXEC, *argv]
    helper.start()
    seen = {}
    for user in (MEMBER, OTHER_MEMBER, MEMBER):
        result = appjail(helper, user, "run", "--dns", DNS, "--", USER_PYTHON, "-c", SESSION_KEYRING)
        assert result.returncode == 0, result.stderr
        keyring, description = result.stdout.split()
        kind, uid, _gid, _perm, name = description.split(";")
        assert (kind, int(uid), name) == ("keyring", users.uid(user), "_ses"), description
        seen.setdefault(keyring, user)
    assert len(seen) == 3, "one keyring per program, shared with no one"


def test_names_resolve_through_the_jails_dns_server(helper, lab):
    result = appjail(helper, MEMBER, "run", "--dns", DNS, "--", "getent", "hosts", "resolve-me.lab.test")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [lab.SERVER_ADDR, "resolve-me.lab.test"]
    assert any(q["name"].rstrip(".") == "resolve-me.lab.test" for q in lab.dns_log())


def test_doctor_tells_members_and_outsiders_where_they_stand(helper):
    member = appjail(helper, MEMBER, "doctor", "--vpn", "wg0")
    assert "appjail-helper answers on the system bus" in member.stdout
    assert "you may run programs in jails" in member.stdout
    backend = os.environ["APPJAIL_FIREWALL"]  # the lab's helper uses the test run's backend
    assert f"the helper writes its rules with the {backend} backend (set by the firewall setting)" \
        in member.stdout, member.stdout
    outsider = appjail(helper, OUTSIDER, "doctor")
    assert outsider.returncode == 1
    assert "polkit does not let you run programs in jails" in outsider.stdout
    assert "usermod -aG appjail" in outsider.stdout


def test_outsider_is_refused_and_nothing_is_created(helper):
    result = appjail(helper, OUTSIDER, "run", "--dns", DNS, "--", "true")
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and "not authorized" in result.stderr, result.stderr
    assert list_namespaces("aj-") == []


CALL_AND_DISCONNECT = """
import os, sys, dbus, dbus.lowlevel
from appjail import interface as api
for i in range(50):
    bus = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
    message = dbus.lowlevel.MethodCallMessage(api.BUS_NAME, api.OBJECT_PATH, api.INTERFACE, "Run")
    message.append({"name": "race%d" % i}, [b"true"], [], b"/", [dbus.types.UnixFd(0)] * 3,
                   signature="a{sv}aayaayayah")
    message.set_no_reply(True)
    bus.send_message(message)
    bus.flush()
    bus.close()
bus = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
try:
    bus.call_blocking(api.BUS_NAME, api.OBJECT_PATH, api.INTERFACE, "Run", "a{sv}aayaayayah",
                      ({"name": "race"}, [b"true"], [], b"/", [dbus.types.UnixFd(0)] * 3))
except dbus.DBusException as exc:
    print(exc.get_dbus_name())
"""


def test_outsider_disconnecting_right_after_the_call_is_still_refused(helper):
    result = subprocess.run([USER_PYTHON, "-c", CALL_AND_DISCONNECT], capture_output=True, text=True,
                            timeout=120, **user_popen_kwargs(OUTSIDER, helper.bus_address))
    assert result.stdout.strip() == "org.appjail.Error.NotAuthorized", result.stderr
    time.sleep(1)  # let the helper finish any check still in flight
    assert list_namespaces("aj-") == []
    assert helper.proc.poll() is None


DESCRIPTOR_FLOOD = """
import os, dbus
from appjail import interface as api
bus = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
read_end, _ = os.pipe()
fd = dbus.types.UnixFd(read_end)
run = ("Run", "a{sv}aayaayayah")
calls = [
    (*run, ({"name": "flood", "dns": fd}, [b"true"], [], b"/", [fd] * 3)),  # one hidden in a variant
    (*run, ({"name": "flood"}, [b"true"], [], b"/", [fd] * 3)),
    ("Stop", "h", (fd,)),
]
names = set()
for i in range(1000):
    method, signature, args = calls[i % len(calls)]
    try:
        bus.call_blocking(api.BUS_NAME, api.OBJECT_PATH, api.INTERFACE, method, signature, args)
    except dbus.DBusException as exc:
        names.add(exc.get_dbus_name())
print(" ".join(sorted(names)))
"""


def test_descriptors_of_refused_calls_are_all_closed(helper):
    assert appjail(helper, MEMBER, "ls").returncode == 0  # the helper's own connections are made
    before = open_fds(helper)
    result = subprocess.run([USER_PYTHON, "-c", DESCRIPTOR_FLOOD], capture_output=True, text=True,
                            timeout=300, **user_popen_kwargs(OUTSIDER, helper.bus_address))
    assert result.stdout.split() == ["org.appjail.Error.InvalidArgument",
                                     "org.appjail.Error.NotAuthorized"], result.stderr
    assert wait_until(lambda: open_fds(helper) <= before, 5), (before, open_fds(helper))
    served = appjail(helper, MEMBER, "run", "--dns", DNS, "--", "echo", "served")
    assert (served.returncode, served.stdout) == (0, "served\n"), served.stderr


def _forwarding_flags(lab) -> dict[str, str]:
    keys = ["net/ipv4/ip_forward"] + [f"net/ipv4/conf/{i}/forwarding" for i in ("all", "default", "lo")]
    with in_netns(lab.host_ns):
        return {key: read_sysctl(key) for key in keys}


@pytest.mark.parametrize("vpn", ["all", "default", "lo", "aj-x"])
def test_a_vpn_that_is_not_one_interface_is_refused(helper, lab, vpn):
    before = _forwarding_flags(lab)
    result = appjail(helper, MEMBER, "run", "--vpn", vpn, "--dns", DNS, "--", "true")
    assert result.returncode == 125 and result.stderr.count("\n") == 1, result.stderr
    assert f"{vpn!r}" in result.stderr
    assert _forwarding_flags(lab) == before
    assert list_namespaces("aj-") == []


def test_other_users_jail_is_out_of_reach(helper, users):
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "mine", "--dns", DNS, "--", "true").returncode == 0
    uid = users.uid(MEMBER)
    for args in (("inspect", f"{MEMBER}/mine"), ("stop", f"{MEMBER}/mine"), ("stop", f"{uid}/mine"),
                 ("inspect", f"{MEMBER}/none")):  # whether it exists or not
        result = appjail(helper, OTHER_MEMBER, *args)
        assert result.returncode == 125 and "another user" in result.stderr, (args, result.stderr)
    for args in (("run", "--name", f"{MEMBER}/mine", "--", "true"), ("inspect", "mine"), ("stop", "mine")):
        result = appjail(helper, OTHER_MEMBER, *args)  # a bare name is always one's own
        assert result.returncode == 125 and "another user" not in result.stderr, (args, result.stderr)
    assert [j["name"] for j in jails(helper, OTHER_MEMBER)] == []
    assert [j["name"] for j in jails(helper)] == ["mine"]
    assert appjail(helper, MEMBER, "stop", "mine").returncode == 0
    assert jails(helper) == []


def test_signals_reach_the_jails_owner_and_managers_and_no_other_user(helper):
    owner, other, manager = (signal_listener(helper, user) for user in (MEMBER, OTHER_MEMBER, "root"))
    assert appjail(helper, MEMBER, "run", "--name", "secret", "--dns", DNS, "--", "true").returncode == 0
    # the other user's own jail comes after: were the first one's signals sent to it, they would come first
    assert appjail(helper, OTHER_MEMBER, "run", "--name", "theirs", "--dns", DNS, "--", "true").returncode == 0
    assert signals_seen(owner, 2) == ["JailAdded secret", "JailRemoved secret"]
    assert signals_seen(other, 1) == ["JailAdded theirs"]
    assert signals_seen(manager, 4) == ["JailAdded secret", "JailRemoved secret",
                                        "JailAdded theirs", "JailRemoved theirs"]


def test_a_caller_polkit_allows_to_manage_may_act_on_any_jail(helper, users):
    # polkit authorises uid 0 for every action, org.appjail.manage included
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "theirs", "--dns", DNS, "--", "true").returncode == 0
    listed = jails(helper, "root")
    assert [(j["name"], j["owner_uid"]) for j in listed] == [("theirs", users.uid(MEMBER))]
    assert appjail(helper, "root", "stop", "theirs").returncode == 125, "root's own 'theirs' does not exist"
    assert appjail(helper, "root", "stop", f"{MEMBER}/theirs").returncode == 0
    assert jails(helper) == [] and list_namespaces("aj-") == []


def test_two_members_each_have_a_jail_of_the_same_name(helper, lab, users):
    a_uid, b_uid = users.uid(MEMBER), users.uid(OTHER_MEMBER)
    for user in (MEMBER, OTHER_MEMBER):
        made = appjail(helper, user, "run", "--keep", "--name", "same", "--dns", DNS, "--", "true")
        assert made.returncode == 0, made.stderr
    mine, theirs = jails(helper, MEMBER), jails(helper, OTHER_MEMBER)
    assert [(j["name"], j["owner_uid"], j["netns"]) for j in mine] == [("same", a_uid, "aj-same")]
    assert [(j["name"], j["owner_uid"]) for j in theirs] == [("same", b_uid)]
    b_netns = theirs[0]["netns"]
    assert b_netns.startswith("aj-same-") and len(b_netns) == 12 and mine[0]["address"] != theirs[0]["address"]
    assert sorted(list_namespaces("aj-")) == sorted(["aj-same", b_netns])
    assert Path(f"/etc/netns/{b_netns}/resolv.conf").exists()
    for user, uid in ((MEMBER, a_uid), (OTHER_MEMBER, b_uid)):  # each joins its own, and it works
        result = appjail(helper, user, "run", "--name", "same", "--", "sh", "-c",
                         "id -u; curl -sS http://192.0.2.80/")
        assert result.stdout.splitlines()[0] == str(uid), result.stderr
        assert result.stdout.splitlines()[1].startswith("client="), result.stderr
    listed = appjail(helper, "root", "ls")
    assert f"same  {MEMBER}" in listed.stdout and f"same  {OTHER_MEMBER}" in listed.stdout, listed.stdout
    assert appjail(helper, MEMBER, "stop", "same").returncode == 0
    assert [j["netns"] for j in jails(helper, OTHER_MEMBER)] == [b_netns] and list_namespaces("aj-") == [b_netns]
    inspected = json.loads(appjail(helper, OTHER_MEMBER, "inspect", "--json", "same").stdout)
    assert inspected["netns"] == b_netns and inspected["counters"]["tx_packets"] > 0
    assert appjail(helper, "root", "stop", f"{OTHER_MEMBER}/same").returncode == 0
    assert jails(helper, OTHER_MEMBER) == [] and list_namespaces("aj-") == []


def test_a_member_at_the_jail_limit_is_refused_and_root_is_not(helper, users):
    helper.kill(signal.SIGTERM)
    helper.start("--max-jails-per-user", "2")
    for name in ("one", "two"):
        assert appjail(helper, MEMBER, "run", "--keep", "--name", name, "--dns", DNS, "--", "true").returncode == 0
    third = appjail(helper, MEMBER, "run", "--keep", "--name", "three", "--dns", DNS, "--", "true")
    assert third.returncode == 125 and third.stderr.count("\n") == 1, third.stderr
    assert "the 2 jails one user may have" in third.stderr
    assert sorted(j["name"] for j in jails(helper)) == ["one", "two"]
    assert sorted(list_namespaces("aj-")) == ["aj-one", "aj-two"] and not Path("/etc/netns/aj-three").exists()
    joined = appjail(helper, MEMBER, "run", "--name", "one", "--", "echo", "joined")
    assert (joined.returncode, joined.stdout) == (0, "joined\n"), "joining is no new jail"
    for name in ("r1", "r2", "r3"):  # root is not limited
        assert appjail(helper, "root", "run", "--keep", "--name", name, "--dns", DNS, "--", "true").returncode == 0
    for name in (f"{MEMBER}/one", f"{MEMBER}/two", "r1", "r2", "r3"):
        assert appjail(helper, "root", "stop", name).returncode == 0
    assert list_namespaces("aj-") == []


@pytest.mark.parametrize("argv,status", [
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -TERM $$"], 143),
    (["no-such-program-here"], 127),
    (["/etc/hostname"], 126),
])
def test_exit_status_is_the_programs(helper, argv, status):
    result = appjail(helper, MEMBER, "run", "--dns", DNS, "--", *argv)
    assert result.returncode == status, result.stderr


def test_stdin_is_passed_through_without_a_terminal_and_the_jail_is_gone_for_the_next_call(helper):
    result = appjail(helper, MEMBER, "run", "--dns", DNS, "--", "cat", input="hi\n")
    assert (result.returncode, result.stdout) == (0, "hi\n")
    assert jails(helper) == []  # the helper tore it down before answering anything else
    assert list_namespaces("aj-") == []


def test_same_name_shares_one_jail_which_ends_with_its_last_program(helper):
    first = subprocess.Popen(appjail_argv("run", "--name", "shared", "--dns", DNS, "--", "sleep", "3"),
                             stdin=subprocess.DEVNULL, **user_popen_kwargs(MEMBER, helper.bus_address))
    try:
        assert wait_until(lambda: len(jails(helper)) == 1, 10)
        (jail,) = jails(helper)
        assert {option.key for option in spec_options()} <= set(jail), "ls --json has every option but files"
        assert "wireguard" not in jail, "a file option's text is never shown"
        second = appjail(helper, MEMBER, "run", "--name", "shared", "--dns", DNS, "--", "readlink",
                         "/proc/self/ns/net")
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == os.readlink(f"/proc/{jail['pids'][0]}/ns/net")
        conflicting = appjail(helper, MEMBER, "run", "--name", "shared", "--vpn", "wg0", "--no-lan", "--", "true")
        assert conflicting.returncode == 125
        assert "already exists with vpn none; no-lan no: leave those options out" in conflicting.stderr
    finally:
        assert first.wait(timeout=20) == 0
    assert wait_until(lambda: jails(helper) == [], 10)
    # the registry lets the jail go first, its teardown (in a worker thread) follows
    assert wait_until(lambda: list_namespaces("aj-") == [], 10)


def test_kept_jail_survives_until_stopped(helper):
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "kept", "--dns", DNS, "--", "true").returncode == 0
    time.sleep(1.5)
    assert [j["name"] for j in jails(helper)] == ["kept"]
    assert appjail(helper, MEMBER, "stop", "kept").returncode == 0
    assert jails(helper) == [] and list_namespaces("aj-") == []


def test_when_run_returns_the_jail_it_left_is_gone(helper, lab):
    for options in ([], ["--vpn", lab.wg_ifname], []):  # a jail still there would conflict
        result = appjail(helper, MEMBER, "run", "--name", "gone", *options, "--dns", DNS, "--", "true")
        assert result.returncode == 0, result.stderr
        assert list_namespaces("aj-") == [] and not Path("/etc/netns/aj-gone").exists()


def test_a_daemon_keeps_its_jail_alive(helper, tmp_path):
    marker = Path(os.path.expanduser(f"~{MEMBER}")) / "daemon-done"
    result = appjail(helper, MEMBER, "run", "--name", "daemon", "--dns", DNS, "--", "sh", "-c",
                     f"(sleep 2; touch {marker}) >/dev/null 2>&1 </dev/null & exit 0", timeout=10)
    assert result.returncode == 0
    assert [j["name"] for j in jails(helper)] == ["daemon"], "the jail outlives the launcher"
    assert wait_until(marker.exists, 10)
    assert wait_until(lambda: jails(helper) == [], 10)


DROP_THE_EXIT_PIPE = """
import os
from appjail.client import Client, session_environment
name, pid, exit_pipe = Client().run({"name": "dropped", "dns": ["192.0.2.53"]}, [b"sleep", b"0.5"],
                                    session_environment(), b"/", [0, 1, 2])
os.close(exit_pipe)
print(name, pid)
"""


def test_a_caller_that_drops_its_exit_pipe_harms_nothing(helper):
    result = subprocess.run([USER_PYTHON, "-c", DROP_THE_EXIT_PIPE], capture_output=True, text=True,
                            timeout=30, **user_popen_kwargs(MEMBER, helper.bus_address))
    assert result.returncode == 0 and result.stdout.startswith("dropped "), result.stderr
    assert wait_until(lambda: jails(helper) == [], 10), "the jail still goes when the program ends"
    assert appjail(helper, MEMBER, "run", "--dns", DNS, "--", "sh", "-c", "exit 3").returncode == 3


RUN_IN = """
import sys
from appjail.client import Client, HelperError, session_environment
try:
    Client().run({"name": "stuck", "dns": ["192.0.2.53"]}, [b"true"], session_environment(),
                 sys.argv[1].encode(), [0, 1, 2])
except HelperError as exc:
    print(exc.name, exc)
"""


def test_a_launch_stuck_on_a_filesystem_that_never_answers_blocks_no_one(helper):
    with unanswering_fuse() as mountpoint:
        stuck = subprocess.Popen([USER_PYTHON, "-c", RUN_IN, str(mountpoint)], stdout=subprocess.PIPE,
                                 text=True, **user_popen_kwargs(MEMBER, helper.bus_address))
        try:
            # the child entered the jail: now it enters the directory, and hangs there
            assert wait_until(lambda: "aj-stuck" in list_namespaces("aj-")
                              and namespace_pids("aj-stuck"), 10)
            time.sleep(0.3)
            assert ls_seconds(helper, OTHER_MEMBER) < 1.0
            out, _ = stuck.communicate(timeout=30)
        finally:
            stuck.kill()
    assert out.startswith("org.appjail.Error.Failed ") and "did not start within" in out, out
    assert wait_until(lambda: jails(helper) == [], 10), "the killed child's jail goes"


START_STUCK = """
import os, sys, dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib
from appjail import interface as api
DBusGMainLoop(set_as_default=True)
bus = dbus.SystemBus()
loop, answers = GLib.MainLoop(), []
stdio, _ = os.pipe()
print(os.readlink(f"/proc/self/fd/{stdio}"), flush=True)  # the pipe each program gets as stdin, stdout, stderr
def answered(answer):
    answers.append(answer)
    if len(answers) == int(sys.argv[2]):
        loop.quit()
for _ in range(int(sys.argv[2])):
    bus.call_async(api.BUS_NAME, api.OBJECT_PATH, api.INTERFACE, "Run", "a{sv}aayaayayah",
                   ({"name": "stuck", "dns": ["192.0.2.53"]}, [b"true"], [], sys.argv[1].encode(),
                    [dbus.types.UnixFd(stdio)] * 3),
                   lambda *values: answered("started"), lambda error: answered(error.get_dbus_name()), timeout=60)
loop.run()
print(*sorted(set(answers)))
"""


def start_stuck(helper, mountpoint: Path, count: int) -> tuple[subprocess.Popen[str], str]:
    """COUNT Runs of MEMBER in MOUNTPOINT, each stuck there until the launch deadline; and their stdio pipe."""
    stuck = subprocess.Popen([USER_PYTHON, "-c", START_STUCK, str(mountpoint), str(count)], stdout=subprocess.PIPE,
                             text=True, **user_popen_kwargs(MEMBER, helper.bus_address))
    return stuck, stuck.stdout.readline().strip()


def held_by(pid: int) -> list[str]:
    """What each descriptor of process PID is (readlink), one entry per descriptor."""
    return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]


def test_a_run_waiting_for_its_program_holds_none_of_the_descriptors_it_brought(helper):
    with unanswering_fuse() as mountpoint:
        stuck, stdio = start_stuck(helper, mountpoint, 1)
        try:
            assert wait_until(lambda: "aj-stuck" in list_namespaces("aj-") and namespace_pids("aj-stuck"), 10)
            (child,) = namespace_pids("aj-stuck")
            assert wait_until(lambda: held_by(child).count(stdio) == 3, 5), "its stdin, stdout and stderr"
            assert stdio not in held_by(helper.proc.pid), "the call's message, with its copies, is gone"
            out, _ = stuck.communicate(timeout=60)
        finally:
            stuck.kill()
    assert out == "org.appjail.Error.Failed\n"


def test_a_user_with_as_many_programs_starting_as_allowed_is_refused_in_one_sentence(helper):
    with unanswering_fuse() as mountpoint:
        stuck, _stdio = start_stuck(helper, mountpoint, MAX_STARTING_PER_USER)
        try:
            # each child entered the jail: now it enters the directory, and hangs there until the deadline
            assert wait_until(lambda: "aj-stuck" in list_namespaces("aj-")
                              and len(namespace_pids("aj-stuck")) == MAX_STARTING_PER_USER, 10)
            refused = appjail(helper, MEMBER, "run", "--dns", DNS, "--", "true")
            assert refused.returncode == 125 and refused.stderr.count("\n") == 1, refused.stderr
            assert (f"{MAX_STARTING_PER_USER} programs of yours are starting already, as many as one user may"
                    in refused.stderr)
            served = appjail(helper, OTHER_MEMBER, "run", "--dns", DNS, "--", "echo", "served")
            assert (served.returncode, served.stdout) == (0, "served\n"), served.stderr
            out, _ = stuck.communicate(timeout=60)
        finally:
            stuck.kill()
    assert out == "org.appjail.Error.Failed\n", "each waited for the launch deadline"
    assert wait_until(lambda: jails(helper) == [], 10), "the killed children's jail goes"
    assert appjail(helper, MEMBER, "run", "--dns", DNS, "--", "true").returncode == 0, "room again"


def test_the_helper_lifts_its_soft_descriptor_limit_to_the_hard_one(helper):
    helper.kill(signal.SIGTERM)
    helper.enter_argv = lambda argv: ["prlimit", "--nofile=128:", "--", *argv]  # soft 128, the hard one kept
    helper.start()
    limits = Path(f"/proc/{helper.proc.pid}/limits").read_text()
    soft, hard = re.search(r"^Max open files +(\d+) +(\d+)", limits, re.MULTILINE).groups()
    assert soft == hard and int(hard) > 128, limits


def test_stopping_a_program_that_ignores_sigterm_delays_no_one(helper):
    stubborn = subprocess.Popen(appjail_argv("run", "--name", "stubborn", "--dns", DNS, "--", "sh", "-c",
                                             "trap '' TERM; sleep 60"),
                                stdin=subprocess.DEVNULL, **user_popen_kwargs(MEMBER, helper.bus_address))
    try:
        assert wait_until(lambda: [j["name"] for j in jails(helper)] == ["stubborn"], 10)
        stop = subprocess.Popen(appjail_argv("stop", "stubborn"), stdin=subprocess.DEVNULL,
                                **user_popen_kwargs(MEMBER, helper.bus_address))
        time.sleep(0.5)  # the stop waits out the grace period of SIGTERM now
        assert ls_seconds(helper, OTHER_MEMBER) < 1.0
        assert stop.wait(timeout=20) == 0
        assert stubborn.wait(timeout=10) == 128 + signal.SIGKILL
    finally:
        stubborn.kill()
    assert jails(helper) == [] and list_namespaces("aj-") == []


def test_a_program_inside_a_vpn_jail_cannot_get_out_by_asking_appjail(helper, lab):
    for options in (["--name", "tunnel", "--vpn", lab.wg_ifname], ["--name", "other"]):
        assert appjail(helper, MEMBER, "run", "--keep", *options, "--dns", DNS, "--", "true").returncode == 0
    curl = ["curl", "-sS", "--max-time", "3", f"http://{lab.SERVER_ADDR}/escape"]
    asked = {  # what a program inside the jail asks appjail for, and why it is refused
        "a new NAT jail": (appjail_argv("run", "--", *curl), "may not start programs in a new jail"),
        "a jail on the uplink": (appjail_argv("run", "--vpn", "up0", "--", *curl),
                                 "may not start programs in a new jail"),
        "another jail": (appjail_argv("run", "--name", "other", "--", *curl),
                         "may not start programs in jail 'other'"),
        "to stop another jail": (appjail_argv("stop", "other"), "may not stop jail 'other'"),
        "from a namespace of its own": (["unshare", "-cn", *appjail_argv("run", "--", *curl)],
                                        "network namespace they made themselves"),
    }
    lab.wg_down()
    try:
        for what, (argv, why) in asked.items():
            result = appjail(helper, MEMBER, "run", "--name", "tunnel", "--", *argv)
            assert result.returncode == 125 and result.stdout == "", (what, result)
            assert result.stderr.count("\n") == 1 and why in result.stderr, (what, result.stderr)
        own = appjail(helper, MEMBER, "run", "--name", "tunnel", "--",
                      *appjail_argv("run", "--name", "tunnel", "--", *curl))
        assert own.returncode != 0 and "/escape" not in str(lab.http_log()), "the kill switch holds"
    finally:
        lab.wg_up()
    assert sorted(j["name"] for j in jails(helper)) == ["other", "tunnel"]
    for name in ("other", "tunnel"):
        assert appjail(helper, MEMBER, "stop", name).returncode == 0


def test_a_program_cut_off_the_network_cannot_get_it_by_asking_appjail(helper, lab, users):
    """A sandbox without network (bwrap --unshare-net) or a service's PrivateNetwork=: no jail for it."""
    entry = pwd.getpwnam(MEMBER)
    curl = ["curl", "-sS", "--max-time", "3", f"http://{lab.SERVER_ADDR}/cut-off"]
    sandbox = ["bwrap", "--unshare-net", "--dev-bind", "/", "/", "--"]
    kwargs = user_popen_kwargs(MEMBER, helper.bus_address)
    # the user's own sandbox: its namespace belongs to the user namespace bwrap made for it
    by_user = subprocess.run([*sandbox, *appjail_argv("run", "--dns", DNS, "--", *curl)],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, **kwargs)
    assert by_user.returncode == 125 and "network namespace they made themselves" in by_user.stderr, by_user
    # made by root, as systemd makes a PrivateNetwork= service's (or a setuid bwrap its sandbox's)
    by_root = subprocess.run(in_helper_netns([
        *sandbox, "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--",
        *appjail_argv("run", "--dns", DNS, "--", *curl)]),
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=kwargs["env"], cwd=kwargs["cwd"])
    assert by_root.returncode == 125 and by_root.stderr.count("\n") == 1, by_root
    assert "does not answer programs in another network namespace than the host's" in by_root.stderr
    assert "/cut-off" not in str(lab.http_log()) and jails(helper) == [] and list_namespaces("aj-") == []


def test_helper_killed_and_restarted_adopts_its_jails(helper, lab, tmp_path):
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "adopt", "--vpn", lab.wg_ifname,
                   "--dns", DNS, "--", "true").returncode == 0
    cli_errors = tmp_path / "busy.err"
    with cli_errors.open("w") as errors:  # the program shares it: a pipe would stay open 4 s
        busy = subprocess.Popen(appjail_argv("run", "--name", "busy", "--dns", DNS, "--", "sleep", "4"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                                **user_popen_kwargs(MEMBER, helper.bus_address))
    # the program runs (its pid listed) and its CLI has Run's answer: it waits for the exit, not a reply
    assert wait_until(lambda: [j["pids"] != [] for j in jails(helper) if j["name"] == "busy"] == [True], 10)
    assert wait_until(lambda: cli_errors.read_text() == "" and busy.poll() is None, 1)
    time.sleep(0.5)
    helper.kill(signal.SIGKILL)
    busy.wait(timeout=10)  # its CLI lost the helper; the program itself lives on
    assert busy.returncode == 125 and "lost the program" in cli_errors.read_text()
    helper.start()
    assert sorted(j["name"] for j in jails(helper)) == ["adopt", "busy"]
    result = appjail(helper, MEMBER, "run", "--name", "adopt", "--", "curl", "-sS", "http://192.0.2.80/")
    assert result.stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n", result.stderr
    assert wait_until(lambda: [j["name"] for j in jails(helper)] == ["adopt"], 15), "busy ends with sleep"
    assert appjail(helper, MEMBER, "stop", "adopt").returncode == 0
    assert list_namespaces("aj-") == []


def test_a_second_helper_exits_before_it_touches_the_first_ones_jails(helper):
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "first", "--dns", DNS, "--", "true").returncode == 0
    create_namespace("aj-halfmade")  # as the first helper's jail being made right now: no record yet
    try:
        files = sorted(str(p) for p in helper.run_dir.rglob("*"))
        second = subprocess.run(netns_exec_argv(helper.host_ns, [
            sys.executable, "-m", "appjail.helper.main", "--bus-address", helper.bus_address,
            "--run-dir", str(helper.run_dir)]), capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr == ("appjail-helper: org.appjail.Helper1 is already owned: another helper is "
                                 "running (this one changed nothing)\n")
        assert sorted(list_namespaces("aj-")) == ["aj-first", "aj-halfmade"]
        assert sorted(str(p) for p in helper.run_dir.rglob("*")) == files
    finally:
        delete_namespace("aj-halfmade")
    result = appjail(helper, MEMBER, "run", "--name", "first", "--", "curl", "-sS", "http://192.0.2.80/")
    assert result.stdout.startswith("client="), result.stderr
    assert appjail(helper, MEMBER, "stop", "first").returncode == 0


def test_a_helper_whose_bus_daemon_ended_first_exits_without_a_traceback(helper, tmp_path):
    """At shutdown everything gets SIGTERM at once, and the bus daemon may end before the helper: the
    helper still ends cleanly (its name went with the daemon)."""
    helper.kill(signal.SIGTERM)
    try:
        with PrivateSystemBus(extra_policies=[BUS_POLICY]) as bus:
            alone = LabHelper(helper.host_ns, bus.address, helper.run_dir, tmp_path / "helper.log")
            alone.start()
            bus.close()
            alone.kill(signal.SIGTERM)
        log = (tmp_path / "helper.log").read_text()
        assert "serving org.appjail.Helper1" in log and "Traceback" not in log, log
    finally:
        helper.start()


def test_idle_helper_exits_only_when_no_jail_is_left(helper):
    assert appjail(helper, MEMBER, "run", "--keep", "--name", "idle", "--dns", DNS, "--", "true").returncode == 0
    helper.kill(signal.SIGTERM)
    helper.start("--idle-exit", "1")
    time.sleep(2.5)
    assert helper.proc.poll() is None, "a kept jail holds the helper"
    assert appjail(helper, MEMBER, "stop", "idle").returncode == 0
    assert helper.proc.wait(timeout=5) == 0
    helper.proc = None


class Terminal:
    """Drive a program through a pty, like a person at a terminal."""

    def __init__(self, argv: list[str], rows: int, columns: int, preexec_fn: Callable[[], None],
                 **kwargs) -> None:
        self.master, slave = pty.openpty()
        self.resize(rows, columns)

        def take_terminal() -> None:
            preexec_fn()  # the user's, in the helper's namespace
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # its own session, with the pty as controlling terminal: resizes send it SIGWINCH
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True, preexec_fn=take_terminal, **kwargs)
        os.close(slave)
        self.seen = b""

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 10) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern.encode(), self.seen)
            if match:
                self.seen = self.seen[match.end():]
                return match
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"did not see {pattern!r} in {self.seen[-500:]!r}")
            try:
                self.seen += os.read(self.master, 4096)
            except OSError:
                raise AssertionError(f"terminal closed before {pattern!r}: {self.seen[-500:]!r}")


def test_interactive_shell_gets_a_real_terminal(helper):
    term = Terminal(appjail_argv("run", "--dns", DNS, "--", "bash", "--norc", "--noprofile", "-i"),
                    rows=33, columns=111, **user_popen_kwargs(MEMBER, helper.bus_address))
    try:
        term.send("PS1='$ '; tty; stty size\n")
        term.expect(r"/dev/pts/\d+")
        term.expect(r"\b33 111\b")
        term.resize(40, 120)  # reaches the jail's terminal by SIGWINCH and the CLI: asked until it shows
        deadline = time.monotonic() + 10
        while True:
            term.send("stty size\n")
            size = term.expect(r"\b(\d+ \d+)\r\n").group(1)
            if size == b"40 120" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert size == b"40 120"
        term.send("sleep 100\n")
        time.sleep(0.5)
        term.send("\x03")  # Ctrl-C interrupts the sleep, not the shell
        term.send("echo alive-$((20+22))\n")
        term.expect("alive-42", timeout=5)
        term.send("sleep 50 &\n")
        term.send("jobs\n")
        term.expect(r"\[1\]\+\s+Running\s+sleep 50")
        term.send("kill %1; exit 3\n")
        assert term.proc.wait(timeout=10) == 3
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()  # no zombie left to a later test
        os.close(term.master)


FUZZ = r"""
import json, os, random, dbus
from appjail import interface as api
bus = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
rng = random.Random(7)
strings = ["", "../x", "a" * 300, "x\x01y", "wg0;x", "wg0 x", "$(reboot)", "é", "A:1", "-a", "a" * 16,
           "aj-x/", "/etc/passwd", "..", "x/y/z", "\u202e", "0" * 16]  # x/y is a jail address (user x)
def call(method, signature, *args):
    try:
        bus.call_blocking(api.BUS_NAME, api.OBJECT_PATH, api.INTERFACE, method, signature, args)
        return "OK"
    except dbus.DBusException as exc:
        return exc.get_dbus_name()
fd = [dbus.types.UnixFd(0)] * 3
cases = []
for s in strings:
    cases.append(("Run name", call("Run", "a{sv}aayaayayah", {"name": s}, [b"true"], [], b"/", fd)))
    cases.append(("Run vpn", call("Run", "a{sv}aayaayayah", {"name": "ok", "vpn": s}, [b"true"], [], b"/", fd)))
    cases.append(("Run dns", call("Run", "a{sv}aayaayayah", {"name": "ok", "dns": dbus.Array([s], signature="s")}, [b"true"], [], b"/", fd)))
    cases.append(("Run key", call("Run", "a{sv}aayaayayah", {s or "?": "x", "name": "ok"}, [b"true"], [], b"/", fd)))
    cases.append(("Stop", call("Stop", "s", s)))
    cases.append(("Inspect", call("Inspect", "s", s)))
for value in [dbus.Int32(5), dbus.Boolean(True), dbus.Array([dbus.Int32(1)], signature="i"), dbus.Double(1.5)]:
    cases.append(("Run name type", call("Run", "a{sv}aayaayayah", {"name": value}, [b"true"], [], b"/", fd)))
    cases.append(("Run keep type", call("Run", "a{sv}aayaayayah", {"name": "ok", "keep": value if not isinstance(value, dbus.Boolean) else dbus.String("yes")}, [b"true"], [], b"/", fd)))
for argv in ([], [b""], [b"a\0b"], [b"x" * 200000], [b"true"] * 5000):
    cases.append(("Run argv", call("Run", "a{sv}aayaayayah", {"name": "ok"}, argv, [], b"/", fd)))
for env in ([b"noequals"], [b"=x"], [b"A=\0"], [b"A=b"] * 5000):
    cases.append(("Run env", call("Run", "a{sv}aayaayayah", {"name": "ok"}, [b"true"], env, b"/", fd)))
for cwd in (b"", b"relative", b"/a\0b", b"/" + b"a" * 5000):
    cases.append(("Run cwd", call("Run", "a{sv}aayaayayah", {"name": "ok"}, [b"true"], [], cwd, fd)))
for fds in ([], fd[:1], fd * 2):
    cases.append(("Run fds", call("Run", "a{sv}aayaayayah", {"name": "ok"}, [b"true"], [], b"/", fds)))
for signature, args in [("s", ("x/y/z",)), ("", ()), ("ss", ("a", "b")), ("a{sv}", ({"name": "x"},)),
                        ("a{sv}aayaayay", ({"name": "ok"}, [b"true"], [], b"/")), ("i", (1,))]:
    cases.append(("Run signature " + signature, call("Run", signature, *args)))
    cases.append(("Stop signature " + signature, call("Stop", signature, *args)))
    cases.append(("Signal signature " + signature, call("Signal", signature, *args)))
for _ in range(60):
    garbage = "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(0, 40))) + "!"
    cases.append(("Run random", call("Run", "a{sv}aayaayayah", {"name": garbage}, [b"true"], [], b"/", fd)))
for sig in (0, -1, 9999, 31):
    cases.append(("Signal", call("Signal", "ui", 1, sig)))
for vpn in ("all", "default", "lo", "aj-x"):  # the helper refuses them whatever the CLI does
    cases.append(("Run vpn " + vpn, call("Run", "a{sv}aayaayayah", {"name": "ok", "vpn": vpn},
                                         [b"true"], [], b"/", fd)))
run_args = [{"name": "ok"}, [b"true"], [], b"/", fd]
run_types = ["a{sv}", "aay", "aay", "ay", "ah"]
for position in range(len(run_args)):  # a descriptor in place of each argument
    signature = "".join("h" if i == position else t for i, t in enumerate(run_types))
    args = [fd[0] if i == position else a for i, a in enumerate(run_args)]
    cases.append(("Run fd at %d" % position, call("Run", signature, *args)))
for method, types, args in [("Stop", "s", ["ok"]), ("Inspect", "s", ["ok"]), ("Signal", "ui", [1, 15])]:
    for position in range(len(types)):
        signature = "".join("h" if i == position else t for i, t in enumerate(types))
        cases.append((method + " fd", call(method, signature, *[fd[0] if i == position else a
                                                               for i, a in enumerate(args)])))
for method in ("List", "WhoAmI", "Reload"):
    cases.append((method + " fd", call(method, "h", fd[0])))
hidden = [fd[0], dbus.Array(fd, signature="h"), dbus.Struct((fd[0], "x")),
          dbus.Dictionary({"h": fd[0]}, signature="sv"), dbus.Array([fd[0]], signature="v")]
for value in hidden:  # a descriptor inside a variant, however deep
    cases.append(("Run fd in option", call("Run", "a{sv}aayaayayah", {"name": "ok", "dns": value},
                                           [b"true"], [], b"/", fd)))
    cases.append(("Run fd as option", call("Run", "a{sv}aayaayayah", {"name": "ok", "fd": value},
                                           [b"true"], [], b"/", fd)))
print(json.dumps(cases))
"""


def test_fuzzed_arguments_are_refused_as_invalid(helper):
    assert appjail(helper, MEMBER, "ls").returncode == 0  # the helper's own connections are made
    before = open_fds(helper)
    result = subprocess.run([USER_PYTHON, "-c", FUZZ], capture_output=True, text=True, timeout=300,
                            **user_popen_kwargs(MEMBER, helper.bus_address))
    assert result.returncode == 0, result.stderr
    cases = json.loads(result.stdout)
    assert len(cases) >= 200
    unexpected = [(what, name) for what, name in cases if name != "org.appjail.Error.InvalidArgument"
                  and not (what == "Signal" and name == "org.appjail.Error.NotAuthorized")]
    assert unexpected == [], unexpected
    assert list_namespaces("aj-") == [] and jails(helper) == []
    assert wait_until(lambda: open_fds(helper) <= before, 5), "every descriptor passed is closed"


def test_firefox_loads_a_page_through_the_vpn(helper, lab):
    home = Path(os.path.expanduser(f"~{MEMBER}"))
    screenshot = home / "lab.png"
    result = appjail(helper, MEMBER, "run", "--vpn", lab.wg_ifname, "--dns", DNS, "--",
                     "firefox-esr", "--headless", "--no-remote", "--screenshot", str(screenshot),
                     f"http://www.{lab.ZONE}/firefox-probe", timeout=180)
    assert result.returncode == 0, result.stderr
    assert screenshot.stat().st_size > 0
    visits = [entry["client"] for entry in lab.http_log() if entry["path"] == "/firefox-probe"]
    assert visits and set(visits) == {lab.WG_CLIENT_TUNNEL_ADDR}, visits
