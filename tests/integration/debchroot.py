"""A fresh minimal Debian made by mmdebstrap, and commands run in it as in a machine of its own.

Each command runs chrooted in a private mount namespace (its root bound onto
itself, a mount point as a system's root is) with /proc, /sys, its own
/dev/pts and /dev/shm (the system's own /dev and /run are directories of
the tree, so what the package or the helper makes there stays inside it), and
optionally in a network namespace of its own: a helper started there touches
nothing of this machine's network. apt reaches the Debian registry through
this machine's network and certificate authorities (copied in).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SUITES = {"12": "bookworm", "13": "trixie"}
# a fresh minimal system as a new user has one: systemd as init, sudo
INCLUDE = "systemd-sysv,sudo"
CA_FILES = [*Path("/usr/local/share/ca-certificates").glob("*"), Path("/etc/ssl/certs/ca-certificates.crt")]
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# the tree as the user has it: what git would hand them, without this checkout's local state
TREE_EXCLUDES = (".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "build")


class DebianSystem:
    """ROOT: a Debian `release` ("12" or "13") of its own, removed with every process in it."""

    def __init__(self, release: str, root: Path) -> None:
        self.release = release
        self.root = root

    def create(self) -> None:
        subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={INCLUDE}", "--quiet",
                        SUITES[self.release], str(self.root), MIRROR],
                       check=True, capture_output=True, text=True, timeout=600)
        # the tun clone device a system's devtmpfs has (the demo's wireguard-go opens it)
        (self.root / "dev/net").mkdir(exist_ok=True)
        os.mknod(self.root / "dev/net/tun", 0o666 | stat.S_IFCHR, os.makedev(10, 200))
        os.chmod(self.root / "dev/net/tun", 0o666)
        for ca in CA_FILES:
            target = self.root / str(ca).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ca, target)

    def copy_tree(self, source: Path, inside: str) -> None:
        target = self.root / inside.lstrip("/")
        target.mkdir(parents=True)
        excludes = [f"--exclude={pattern}" for pattern in TREE_EXCLUDES]
        pack = subprocess.Popen(["tar", *excludes, "-C", str(source), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(target)], stdin=pack.stdout, check=True)
        assert pack.wait() == 0

    def run(self, script: str, *, own_network: bool = False, timeout: float = 900,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """SCRIPT (bash) as root inside, with a clean environment; its output, checked unless told."""
        root = str(self.root)
        # the root a mount point of its own, as a system's is: `ip -n` makes it a slave mount
        mounts = (f"mount --bind {root} {root} && mount -t proc proc {root}/proc && mount -t sysfs sysfs {root}/sys && "
                  f"mount -t devpts -o newinstance,ptmxmode=0666 devpts {root}/dev/pts && "
                  f"mount -t tmpfs tmpfs {root}/dev/shm && "
                  f"exec chroot {root} /usr/bin/env -i PATH={PATH} HOME=/root LANG=C.UTF-8 "
                  f"/bin/bash -euo pipefail -c \"$0\"")
        argv = ["unshare", "--mount", "--propagation", "private", *(["--net"] if own_network else []),
                "/bin/sh", "-c", mounts, script]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"in Debian {self.release}, exit {result.returncode}:\n{script}\n"
                                 f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
        return result

    def processes(self) -> list[int]:
        """Every process whose root is this system's."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "root") == str(self.root):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def end_processes(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.1)

    def remove(self) -> None:
        self.end_processes()
        assert not self.processes(), f"processes left in {self.root}: {self.processes()}"
        shutil.rmtree(self.root)

    def installed(self) -> dict[str, int]:
        """Installed package -> its Installed-Size (KiB)."""
        out = self.run("dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Installed-Size}\\n'").stdout
        return {fields[1]: int(fields[2] or 0) for fields in map(str.split, out.splitlines())
                if fields[0] == "ii"}

    def enabled_units(self) -> set[str]:
        """What is enabled: the symlinks under /etc/systemd (wants, requires, aliases)."""
        base = self.root / "etc/systemd"
        return {str(path.relative_to(base)) for path in base.rglob("*") if path.is_symlink()}

    def files(self, skip: tuple[str, ...]) -> set[str]:
        """Every path in the system but under SKIP (relative, like "root/appjail") and the mounts."""
        mounted = ("proc", "sys", "dev/pts", "dev/shm")
        found = set()
        for directory, dirs, names in os.walk(self.root):
            relative = os.path.relpath(directory, self.root)
            dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(relative, d)) not in (*skip, *mounted)]
            found.update("/" + os.path.normpath(os.path.join(relative, name)) for name in [*dirs, *names])
        return found
