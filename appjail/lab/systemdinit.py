"""`python -m appjail.lab.systemdinit STATE_DIR CGROUP_PROCS...`: boot the lab's systemd.

Run by systemd.py, in two stages of one module:

1. on the machine: move itself into the lab's cgroups (each CGROUP_PROCS
   file), then exec unshare(1) for new pid, mount, cgroup, UTS, IPC and
   network namespaces, which runs this module again as PID 1 there; the
   new cgroup namespace is rooted at those cgroups;
2. as PID 1: prepare the mounts (below), then exec systemd, with the
   bounding set of a container (no module loading, clock setting, raw I/O,
   kernel log, MAC or audit administration).

The mounts, all in the new mount namespace, none reaching the machine's:
every mount becomes a slave (the machine's mounts still show, nothing
mounted here goes back), except /run/netns, which stays the machine's peer
so jails made in here are the machine's and the other way round; /run is a
tmpfs of its own (systemd writes /run/systemd) with /run/netns moved in;
/proc is the new pid namespace's, /proc/sys read-only; /sys/fs/cgroup holds
only the lab's name=systemd, unified and pids hierarchies and is read-only
(so systemd mounts no other controller: those cgroups would be the
machine's); /sys is read-only; /dev/console is STATE_DIR/console, where
systemd writes as a container's PID 1 does; /dev is read-only (its own
mounts, /dev/pts and /dev/shm, are not).

The rest of the machine's filesystem is the machine's: what systemd starts
must stay off it, so its boot runs no unit of the machine's (systemd.py
masks the boot targets).
"""

from __future__ import annotations

import os
import subprocess
import sys

UNSHARE = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--cgroup", "--uts", "--ipc",
           "--net", "--propagation", "unchanged"]
SYSTEMD = "/lib/systemd/systemd"
TARGET = "appjail-lab.target"
# what a container manager takes away too; reboot() in a pid namespace only ends it
DROPPED_CAPABILITIES = ("sys_module", "sys_time", "sys_rawio", "wake_alarm", "syslog",
                        "mac_admin", "mac_override", "audit_control")
NETNS_DIR = "/run/netns"
# hierarchy under /sys/fs/cgroup -> mount type and options
HIERARCHIES = {"systemd": ("cgroup", "none,name=systemd"), "unified": ("cgroup2", "nsdelegate"),
               "pids": ("cgroup", "pids")}


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _slave_all_but_netns() -> None:
    mount_points = {line.split()[4] for line in open("/proc/self/mountinfo")}
    for point in sorted(mount_points):
        if point != NETNS_DIR and not point.startswith(NETNS_DIR + "/"):
            _mount("--make-slave", point)


def _own_run(state: str) -> None:
    kept = os.path.join(state, "netns")
    os.mkdir(kept)
    _mount("--rbind", NETNS_DIR, kept)  # a bind of a shared mount joins its peer group
    _mount("-t", "tmpfs", "-o", "mode=755,nosuid,nodev", "tmpfs", "/run")
    os.mkdir(NETNS_DIR)
    _mount("--move", kept, NETNS_DIR)


def _own_proc_and_sys(state: str) -> None:
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", "/proc")
    _mount("--bind", "/proc/sys", "/proc/sys")
    _mount("-o", "remount,bind,ro", "/proc/sys")
    _mount("-t", "tmpfs", "-o", "mode=755,nosuid,nodev,noexec", "tmpfs", "/sys/fs/cgroup")
    for name, (fstype, options) in HIERARCHIES.items():
        os.mkdir(f"/sys/fs/cgroup/{name}")
        _mount("-t", fstype, "-o", f"nosuid,nodev,noexec,{options}", "cgroup", f"/sys/fs/cgroup/{name}")
    _mount("-o", "remount,bind,ro", "/sys/fs/cgroup")
    _mount("-o", "remount,bind,ro", "/sys")
    console = os.path.join(state, "console")
    open(console, "a").close()
    _mount("--bind", console, "/dev/console")
    _mount("-o", "remount,bind,ro", "/dev")  # devices stay usable; no node or link is made


def boot(state: str) -> None:
    """As PID 1: the mounts, then systemd (units from STATE_DIR/units, no generators)."""
    _slave_all_but_netns()
    _own_run(state)
    _own_proc_and_sys(state)
    empty = os.path.join(state, "none")
    os.mkdir(empty)
    env = {"container": "appjail-lab", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "NOTIFY_SOCKET": os.path.join(state, "notify"),
           "SYSTEMD_UNIT_PATH": os.path.join(state, "units") + ":",  # ":": the usual ones after
           "SYSTEMD_GENERATOR_PATH": empty, "SYSTEMD_ENVIRONMENT_GENERATOR_PATH": empty,
           "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={os.path.join(state, 'system_bus_socket')}"}
    os.execve("/usr/bin/setpriv", [
        "setpriv", "--bounding-set=" + ",".join(f"-{c}" for c in DROPPED_CAPABILITIES), "--",
        SYSTEMD, f"--unit={TARGET}", "--log-target=console", "--show-status=no"], env)


def main(args: list[str]) -> None:
    state, *cgroup_procs = args
    if os.getpid() == 1:
        boot(state)
    for procs in cgroup_procs:
        with open(procs, "w") as file:
            file.write(str(os.getpid()))
    os.execvp(UNSHARE[0], [*UNSHARE, "--", sys.executable, "-m", __spec__.name, state])


if __name__ == "__main__":
    main(sys.argv[1:])
