"""A real systemd, as PID 1 of namespaces of its own, running the lab's system bus and polkitd.

The way container managers run one (systemd's "Container Interface"):
`container=` set, a cgroup namespace rooted at a subtree of the machine's
name=systemd, unified and pids hierarchies (`appjail-lab-systemd-*`, the
only cgroups it makes), private /run, /proc and /sys/fs/cgroup, read-only
/sys and /proc/sys (systemdinit.py has the details). It boots
`appjail-lab.target`, which pulls in nothing but the bus: `dbus.socket`
and `dbus.service` (a dbus-daemon of type system on `address`, with the
policies given) and polkitd on it. Units come from a directory of the
lab's own, ahead of the usual ones; no generator runs; the machine's
enabled services stay off.

The bus daemon names the pids of its peers in its own pid namespace,
polkitd and the helper read their /proc, and systemd takes scope pids in
it: so the helper, and the users who call it, run in here too
(`enter_argv`). The network namespace stays the caller's choice: systemd's
own is empty.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from appjail.lab.bus import bus_config
from appjail.lab.errors import LabError
from appjail.lab.process import READY_TIMEOUT, STOP_TIMEOUT, child_env
from appjail.lab.systemdinit import HIERARCHIES, TARGET

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "appjail-lab-systemd-"

# Masked: the machine's boot. sysinit.target's units would clean the machine's
# /tmp (systemd-tmpfiles --boot), write its wtmp and persistent journal,
# make nodes in its /dev; none is needed for a bus and scopes. The lab's
# own units have no default dependencies, so nothing pulls these in anyway.
MASKED = ("sysinit.target", "basic.target", "systemd-tmpfiles-setup.service",
          "systemd-journald.socket", "systemd-journald.service", "systemd-update-utmp.service")
_UNITS = {
    TARGET: """[Unit]
Description=appjail lab: the system bus and polkit, nothing else
DefaultDependencies=no
Wants=dbus.socket dbus.service polkit.service
After=polkit.service
""",
    "dbus.socket": """[Unit]
Description=the lab's system bus socket
DefaultDependencies=no
[Socket]
ListenStream={socket}
SocketMode=0666
""",
    "dbus.service": """[Unit]
Description=the lab's system bus
DefaultDependencies=no
Requires=dbus.socket
[Service]
ExecStart=/usr/bin/dbus-daemon --nofork --nopidfile --systemd-activation --nosyslog --address=systemd: --config-file={config}
StandardOutput=append:{state}/dbus.log
StandardError=inherit
""",
    "polkit.service": """[Unit]
Description=the lab's polkitd
DefaultDependencies=no
Requires=dbus.service
After=dbus.service
[Service]
Type=dbus
BusName=org.freedesktop.PolicyKit1
Environment=DBUS_SYSTEM_BUS_ADDRESS=unix:path={socket}
ExecStart=/usr/lib/polkit-1/polkitd --no-debug
StandardOutput=append:{state}/polkitd.log
StandardError=inherit
""",
}


class LabSystemd:
    """`with LabSystemd(policies) as systemd:` its bus at `systemd.address`; `enter_argv` runs in."""

    def __init__(self, extra_policies: Sequence[Path] = ()) -> None:
        self.extra_policies = list(extra_policies)
        self.address = ""
        self.pid = 0  # systemd's, in the machine's pid namespace
        self._state: Path | None = None
        self._unshare: subprocess.Popen[bytes] | None = None
        self._cgroups: list[Path] = []

    def __enter__(self) -> LabSystemd:
        try:
            self._boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """An argv running `argv` in systemd's pid, mount and cgroup namespaces (see nsenter.py)."""
        return [sys.executable, "-m", "appjail.lab.nsenter", str(self.pid), "--", *argv]

    @property
    def unit_dir(self) -> Path:
        """The lab's own unit directory, ahead of the usual ones (`daemon-reload` after changing it)."""
        assert self._state is not None
        return self._state / "units"

    def mask(self, unit: str) -> None:
        """Mask UNIT (in the lab's own unit directory) and have systemd reload: starting it fails."""
        assert self._state is not None
        (self._state / "units" / unit).symlink_to(os.devnull)
        subprocess.run(self.enter_argv(["systemctl", "daemon-reload"]), check=True, timeout=30,
                       capture_output=True)

    def log(self) -> str:
        """What systemd, the bus daemon and polkitd wrote."""
        assert self._state is not None
        return "\n".join(f"== {name}:\n{(self._state / name).read_text(errors='replace')}"
                         for name in ("console", "dbus.log", "polkitd.log") if (self._state / name).exists())

    def _boot(self) -> None:
        if not _is_shared_mount(Path("/run/netns")):
            raise LabError("/run/netns is no shared mount: start the lab first (ip netns add makes it one)")
        state = self._state = Path(tempfile.mkdtemp(prefix="appjail-systemd-"))
        state.chmod(0o755)  # every user reaches the bus socket inside
        socket_path = state / "system_bus_socket"
        self.address = f"unix:path={socket_path}"
        (state / "system.conf").write_text(bus_config(socket_path, self.extra_policies))
        (state / "units").mkdir()
        for name, text in _UNITS.items():
            (state / "units" / name).write_text(text.format(socket=socket_path, state=state,
                                                            config=state / "system.conf"))
        for name in MASKED:
            (state / "units" / name).symlink_to(os.devnull)
        self._cgroups = [CGROUP_ROOT / name / (CGROUP_PREFIX + state.name.rpartition("-")[2])
                         for name in HIERARCHIES]
        for cgroup in self._cgroups:
            cgroup.mkdir()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(state / "notify"))
            with open(state / "boot.log", "wb") as log:
                self._unshare = subprocess.Popen(
                    [sys.executable, "-m", "appjail.lab.systemdinit", str(state),
                     *(str(cgroup / "cgroup.procs") for cgroup in self._cgroups)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env())
            self._wait_ready(notify)
        (self.pid,) = map(int, Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
                          .read_text().split())

    def _wait_ready(self, notify: socket.socket) -> None:
        """Until systemd says READY=1: its target, the bus and polkitd are up."""
        assert self._unshare is not None and self._state is not None
        deadline = time.monotonic() + 3 * READY_TIMEOUT
        while (left := deadline - time.monotonic()) > 0 and self._unshare.poll() is None:
            if select.select([notify], [], [], min(left, 0.1))[0] and b"READY=1" in notify.recv(4096):
                return
        boot = (self._state / "boot.log").read_text(errors="replace")
        raise LabError(f"the lab's systemd did not come up:\n{boot}\n{self.log()}")

    def close(self) -> None:
        """End systemd and everything in its namespaces, then remove its cgroups and files."""
        if self._unshare is not None:
            self._unshare.kill()  # --kill-child: systemd gets SIGKILL, its pid namespace ends
            self._unshare.wait()
            self._unshare = None
        if self.pid:
            _wait_gone(self.pid)
            self.pid = 0
        for cgroup in self._cgroups:
            _remove_cgroup(cgroup)
        self._cgroups = []
        if self._state is not None:
            shutil.rmtree(self._state, ignore_errors=True)
            self._state = None


def _is_shared_mount(path: Path) -> bool:
    """Whether a mount at `path` has a peer group (mountinfo's optional fields say shared:N)."""
    with open("/proc/self/mountinfo") as mountinfo:
        return any(fields[4] == str(path) and any(tag.startswith("shared:")
                                                  for tag in fields[6:fields.index("-")])
                   for fields in map(str.split, mountinfo))


def _wait_gone(pid: int) -> None:
    """Until process `pid` (no child of ours: unshare's) has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not select.select([pidfd], [], [], STOP_TIMEOUT)[0]:
            raise LabError(f"the lab's systemd (pid {pid}) did not end")
    finally:
        os.close(pidfd)


def _remove_cgroup(cgroup: Path) -> None:
    """Remove `cgroup` and everything under it, deepest first, once their processes are gone."""
    deadline = time.monotonic() + STOP_TIMEOUT
    below = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for directory in [*below, cgroup]:
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY: an exiting process is still counted
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
