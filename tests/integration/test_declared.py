"""Declared jails (/etc/appjail/jails.d) made by the helper and kept, and systemd services inside them.

The helper reads a directory of the test's (--declared-dir); the services
run under the lab's real systemd (appjail.lab.systemd), with the drop-in
`appjail service` writes into its unit directory (--unit-dir).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appjail.helper.kernel.netns import namespace_id
from appjail.lab.systemd import LabSystemd

from .conftest import jail_run, running_helper
from .helperlab import DNS, MEMBER, USER_CODE, appjail, jails, wait_until
from .test_scopes import appjail_inside, systemctl, systemd  # noqa: F401 - systemd: the module's fixture

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "polkit" / "appjail-jail@.service"


@pytest.fixture
def jails_d(tmp_path) -> Path:
    directory = tmp_path / "jails.d"
    directory.mkdir()
    directory.chmod(0o755)
    return directory


def declare(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def vpn_jail(lab) -> str:
    return f'vpn = "{lab.wg_ifname}"\ndns = ["{DNS}"]\n'


def roots(helper) -> dict[str, dict]:
    return {jail["name"]: jail for jail in jails(helper, "root") if jail["owner_uid"] == 0}


def made(helper, name: str, timeout: float = 30) -> dict:
    assert wait_until(lambda: name in roots(helper), timeout), helper.log_path.read_text()
    return roots(helper)[name]


def test_a_declared_jail_is_made_at_the_start_listed_with_its_file_and_made_again_after_a_restart(
        lab, bus, users, tmp_path, jails_d):
    source = declare(jails_d, "decl", vpn_jail(lab))
    bad = declare(jails_d, "broken", 'vpn = ["wg0"]\n')
    options = ("--declared-dir", str(jails_d))
    with running_helper(lab, bus.address, tmp_path, options=options) as helper:
        jail = made(helper, "decl")
        assert jail["keep"] and jail["source"] == str(source) and jail["vpn"] == lab.wg_ifname
        fetched = jail_run("decl", "curl", "-sS", "http://www.lab.test/")
        assert fetched.stdout == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n", fetched.stderr
        assert f"decl: declared in {source}" in appjail(helper, "root", "ls").stdout
        assert "source" not in json.dumps(jails(helper, MEMBER)), "root's jails are root's and managers' business"

        # the bad file: one sentence in the log and in doctor; the good one was made all the same
        sentence = f'{bad}: vpn: expected a string such as "wg0"'
        assert helper.log_path.read_text().count(sentence) == 1
        doctor = appjail(helper, "root", "doctor")
        assert f"declared jail: {sentence}" in doctor.stdout and doctor.returncode == 1, doctor.stdout

        # a restart: the jail outlived the helper and is kept, not made again
        first = namespace_id("/run/netns/" + jail["netns"])
        helper.kill(signal.SIGTERM)
        helper.start(*options)
        assert made(helper, "decl")["netns"] == jail["netns"]
        assert namespace_id("/run/netns/" + jail["netns"]) == first

        # as after a reboot: the jail went while no helper ran, and the next one makes it again
        helper.stop_and_clean()
        assert "decl" not in [p.name for p in Path("/run/netns").iterdir()]
        helper.start(*options)
        again = made(helper, "decl")
        assert again["source"] == str(source)
        assert jail_run("decl", "curl", "-sS", "http://www.lab.test/").stdout == \
            f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n"


def test_reload_makes_new_files_jails_remakes_changed_ones_and_removes_gone_ones(lab, bus, users, tmp_path,
                                                                              jails_d):
    with running_helper(lab, bus.address, tmp_path, options=("--declared-dir", str(jails_d))) as helper:
        refused = appjail(helper, MEMBER, "reload")
        assert refused.returncode == 125 and "org.appjail.manage" in refused.stderr, refused.stderr
        path = declare(jails_d, "later", f'dns = ["{DNS}"]\n')
        done = appjail(helper, "root", "reload")
        assert done.returncode == 0 and done.stdout == "created: later\n", done.stderr
        first = roots(helper)["later"]
        declare(jails_d, "later", f'dns = ["{DNS}"]\nno_lan = true\n')
        assert appjail(helper, "root", "reload").stdout == "recreated: later\n"
        assert roots(helper)["later"]["no_lan"] and not first["no_lan"]
        unchanged = appjail(helper, "root", "reload")
        assert unchanged.returncode == 0 and unchanged.stdout == ""
        path.unlink()
        assert appjail(helper, "root", "reload").stdout == "removed: later\n"
        assert "later" not in roots(helper)


# -- a systemd service inside a declared jail -----------------------------------------------

FETCH_AND_SERVE = """
import http.server, pathlib, sys, urllib.request
answer = urllib.request.urlopen("http://www.lab.test/", timeout=10).read()
pathlib.Path(sys.argv[1]).write_bytes(answer)
http.server.HTTPServer(("", 8000), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


@pytest.fixture
def lab_units(systemd, tmp_path) -> Iterator[Path]:
    """The shipped appjail-jail@.service in the lab's unit directory (its program from the users' copy of
    the package, a short wait), and a service that fetches the lab's page, writes it down and serves."""
    units = systemd.unit_dir
    shutil.copy(TEMPLATE, units / TEMPLATE.name)
    lab_conf = units / f"{TEMPLATE.name}.d" / "lab.conf"
    lab_conf.parent.mkdir()
    lab_conf.write_text(f"[Service]\nEnvironment=PYTHONPATH={USER_CODE} APPJAIL_JAIL_WAIT=3\n")
    script = tmp_path / "fetch_and_serve.py"
    script.write_text(FETCH_AND_SERVE)
    (units / "ajtest-web.service").write_text(
        "[Unit]\nDefaultDependencies=no\n[Service]\n"
        f"ExecStart=/usr/bin/python3 {script} {tmp_path / 'fetched'}\n")
    systemctl(systemd, "daemon-reload")
    try:
        yield units
    finally:
        subprocess.run(systemd.enter_argv(["systemctl", "stop", "ajtest-web.service"]), capture_output=True)
        for path in (units / TEMPLATE.name, units / "ajtest-web.service"):
            path.unlink(missing_ok=True)
        shutil.rmtree(lab_conf.parent)
        shutil.rmtree(units / "ajtest-web.service.d", ignore_errors=True)


def active(systemd: LabSystemd, unit: str) -> str:
    return subprocess.run(systemd.enter_argv(["systemctl", "is-active", unit]), capture_output=True,
                          text=True, timeout=10).stdout.strip()


def test_a_service_reaches_the_lab_only_through_its_jail_and_does_not_run_without_it(
        lab, systemd, users, tmp_path, jails_d, lab_units):
    source = declare(jails_d, "svc", vpn_jail(lab))
    fetched = tmp_path / "fetched"
    with running_helper(lab, systemd.address, tmp_path, enter_argv=systemd.enter_argv,
                        options=("--declared-dir", str(jails_d))) as helper:
        assert wait_until(lambda: '"svc"' in appjail_inside(systemd, "root", "ls", "--json").stdout, 30), \
            helper.log_path.read_text()
        wrote = appjail_inside(systemd, "root", "service", "--unit-dir", str(lab_units), "svc", "ajtest-web")
        assert wrote.returncode == 0, wrote.stderr
        systemctl(systemd, "daemon-reload")
        started = subprocess.run(systemd.enter_argv(["systemctl", "start", "ajtest-web.service"]),
                                 capture_output=True, text=True, timeout=30)
        assert started.returncode == 0, started.stderr + systemctl(systemd, "status", "ajtest-web.service")
        assert wait_until(fetched.exists, 15), systemctl(systemd, "status", "ajtest-web.service")
        # the lab's server saw the jail's VPN address: the service's traffic left through the jail
        assert fetched.read_text() == f"client={lab.WG_CLIENT_TUNNEL_ADDR}\n"
        pid = systemctl(systemd, "show", "-p", "MainPID", "--value", "ajtest-web.service").strip()
        namespace = subprocess.run(systemd.enter_argv(["readlink", f"/proc/{pid}/ns/net"]), capture_output=True,
                                   text=True, timeout=10).stdout.strip()
        assert namespace == f"net:[{os.stat('/run/netns/aj-svc').st_ino}]", "the service runs in the jail"

        jail_unit = "appjail-jail@aj\\x2dsvc.service"
        assert active(systemd, jail_unit) == "active"

        # the jail goes (its file removed): the unit that stands for it ends, and the service stops with it
        source.unlink()
        assert appjail_inside(systemd, "root", "reload").stdout == "removed: svc\n"
        assert wait_until(lambda: active(systemd, jail_unit) != "active", 15), systemctl(systemd, "status", jail_unit)
        assert wait_until(lambda: active(systemd, "ajtest-web.service") != "active", 15), \
            systemctl(systemd, "status", "ajtest-web.service")

        # without the jail it does not start, and nothing of it ran outside
        fetched.unlink()
        refused = subprocess.run(systemd.enter_argv(["systemctl", "start", "ajtest-web.service"]),
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and active(systemd, "ajtest-web.service") != "active"
        assert not fetched.exists()

        removed = appjail_inside(systemd, "root", "service", "--unit-dir", str(lab_units), "--remove",
                                 "ajtest-web")
        assert removed.returncode == 0 and not (lab_units / "ajtest-web.service.d").exists()
