"""Tunnel daemons without privilege (issue 18): what a member's file could make openvpn do runs as the
tunnel user with no capability, openvpn holds no port of the host, and a process that only looks like a
tunnel daemon is nobody's business of the helper's.

openvpn is started the way the engine starts it (openvpn.start) with lines the allow-list would refuse put
into its configuration, as if they had slipped past it: what they do then is what the kernel allows the
tunnel user.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appjail.helper.engine.engine import Engine
from appjail.helper.kernel import netns
from appjail.helper.tunnels import openvpn, tundaemon
from appjail.lab import Lab
from appjail.model import JailSpec
from appjail.ovpnconf import parse

from .conftest import serving
from .helperlab import wait_until
from .test_openvpn import connected

PLUGIN = r"""
#include <stdio.h>
/* openvpn's plugin interface, version 1: on load, write where and as whom it runs */
void *openvpn_plugin_open_v1(unsigned int *type_mask, const char *argv[], const char *envp[]) {
    FILE *in = fopen("/proc/self/status", "r"), *out = fopen(OUT, "w");
    char line[512];
    while (in && out && fgets(line, sizeof line, in)) fputs(line, out);
    if (in) fclose(in);
    if (out) fclose(out);
    *type_mask = 0;
    return (void *) 1;
}
int openvpn_plugin_func_v1(void *handle, const int type, const char *argv[], const char *envp[]) { return 0; }
void openvpn_plugin_close_v1(void *handle) {}
"""


@pytest.fixture
def plugin() -> Iterator[tuple[Path, Path]]:
    """A real openvpn plugin (compiled here) and the file it writes its process status to."""
    where = Path(tempfile.mkdtemp(prefix="appjail-plugin-", dir="/tmp"))
    where.chmod(0o777)  # whoever openvpn runs as may write there
    source, library, out = where / "plugin.c", where / "plugin.so", where / "status"
    source.write_text(PLUGIN)
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DOUT="{out}"', "-o", str(library), str(source)], check=True)
    try:
        yield library, out
    finally:
        subprocess.run(["rm", "-rf", str(where)], check=True)


def started(lab: Lab, ifname: str, smuggled: str) -> None:
    """IFNAME's openvpn with the lab's client file and SMUGGLED lines, as the engine starts one."""
    openvpn.start(ifname, parse(lab.ovpn_client()).config_text() + smuggled, lambda up: None, lambda: None)


def removed(ifname: str) -> None:
    with netns.rtnl() as ipr:
        openvpn.remove(ipr, ifname, ifname)


def test_a_plugin_that_slipped_past_the_allow_list_runs_as_the_tunnel_user_with_no_privilege(in_host, plugin):
    library, out = plugin
    started(in_host, "aj-ovplug", f"plugin {library}\n")
    try:
        assert wait_until(out.exists, 10), "openvpn loaded the plugin"
        time.sleep(0.1)  # written whole
        status = dict(line.split(":", 1) for line in out.read_text().splitlines())
    finally:
        removed("aj-ovplug")
    uid, gid = tundaemon.account()
    assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split() == [str(gid)] * 4
    assert status["Groups"].split() == []
    assert {name: int(status[name], 16) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} \
        == dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), 0)
    assert status["NoNewPrivs"].strip() == "1", "no setuid program can raise it"


def udp_ports(pid: int) -> list[int]:
    """The local UDP ports of PID's sockets in the calling thread's namespace."""
    lines = subprocess.run(["ss", "-Hunap"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [int(line.split()[3].rpartition(":")[2]) for line in lines if f"pid={pid}," in line]


def test_openvpn_binds_no_port_of_the_host_even_when_told_to(in_host):
    started(in_host, "aj-ovbind", "")
    try:
        assert wait_until(lambda: openvpn.connected("aj-ovbind"), 20), openvpn.why_not("aj-ovbind")
        ports = udp_ports(openvpn.daemon_pid("aj-ovbind"))
    finally:
        removed("aj-ovbind")
    low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert ports and all(port >= low for port in ports), f"only the kernel's ephemeral ports: {ports}"
    for smuggled in ("lport 1053\n", "bind\n"):  # against the forced --nobind, openvpn does not start
        started(in_host, "aj-ovbind", smuggled)
        try:
            assert wait_until(lambda: not openvpn.present("aj-ovbind", "aj-ovbind"), 10), smuggled
            assert openvpn.why_not("aj-ovbind") == "openvpn refused an option of the file"
        finally:
            removed("aj-ovbind")


@pytest.fixture
def lookalike() -> Iterator[subprocess.Popen[bytes]]:
    """A local user's process that looks like openvpn serving aj-ovfake and ignores SIGTERM."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    process = subprocess.Popen(["openvpn", "-c", code, "--dev", "aj-ovfake"], executable="/usr/bin/python3",
                               user=65534, group=65534, extra_groups=[])
    assert wait_until(lambda: serving("openvpn", "aj-ovfake") == [process.pid], 5)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_lookalike_tunnel_daemon_is_neither_signalled_nor_waited_for(in_host: Lab, lookalike, tmp_path):
    engine = Engine(run_dir=tmp_path / "run")
    jail = connected(engine, engine.create(JailSpec("ovfake"), 0, openvpn=parse(in_host.ovpn_client())))
    assert jail.tunnel["type"] == "openvpn"
    began = time.monotonic()
    engine.destroy("ovfake", 0)
    assert time.monotonic() - began < tundaemon.STOP_TIMEOUT, "teardown did not wait for the lookalike"
    report = Engine(run_dir=tmp_path / "run").reconcile()
    assert lookalike.poll() is None and report.removed == [], "the lookalike was left alone"


def test_a_root_only_file_named_by_a_smuggled_config_line_reaches_neither_member_nor_log(in_host, caplog):
    caplog.set_level(logging.INFO)
    where = Path(tempfile.mkdtemp(prefix="appjail-secret-", dir="/tmp"))
    secret = where / "root-only"
    secret.write_text(f"marker-{os.getpid()}-only-root-reads-this\nsecond line\n")
    secret.chmod(0o600)
    where.chmod(0o755)
    try:
        started(in_host, "aj-ovconf", f"config {secret}\n")
        assert wait_until(lambda: not openvpn.present("aj-ovconf", "aj-ovconf"), 10), "openvpn gave up"
        told = openvpn.why_not("aj-ovconf")
    finally:
        removed("aj-ovconf")
        subprocess.run(["rm", "-rf", str(where)], check=True)
    marker = f"marker-{os.getpid()}"
    assert marker not in told and marker not in caplog.text, "openvpn could not read it, and nothing quoted it"
    assert told == "openvpn refused an option of the file", told
