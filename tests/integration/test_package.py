"""The README's install, as a new user does it, on fresh minimal Debian 12 and 13 systems.

`sudo ./scripts/install` in a system made by mmdebstrap: it builds the package
with Debian's tools, installs it with apt and runs the demo. Then: every
package it added is in the runtime set the README documents (docs/packages/),
nothing is enabled at boot, `appjail --version` answers, the helper (behind a
system bus and polkitd started here, in a network namespace of the system's
own) answers `appjail doctor` of a member of group appjail, the unit tests
pass with Debian's own Python packages, and `apt purge appjail` leaves no file
of appjail. Slow (minutes): once per CI run (tests/conftest.py, once_per_run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import appjail

from .debchroot import DebianSystem

REPO = Path(__file__).resolve().parents[2]
TREE = "/root/appjail"  # where the user's checkout is, inside
RUNTIME_SETS = REPO / "docs/packages"
# Debian's own test tools for the unit tests (the tray's widget tests, tests/desktop, need pytest-qt)
UNIT_TEST_PACKAGES = "python3-pytest python3-pytest-timeout python3-hypothesis desktop-file-utils libglib2.0-bin"
# what the doctor's member starts with: the bus, polkitd, the helper; then it asks as the member
DOCTOR = """
useradd --create-home --groups appjail member
mkdir -p /run/dbus && dbus-daemon --system --fork
/usr/lib/polkit-1/polkitd --no-debug >/dev/null 2>&1 &
appjail-helper >/tmp/helper.log 2>&1 &
owned() { dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
          org.freedesktop.DBus.NameHasOwner "string:$1" 2>/dev/null | grep -q true; }
for _ in $(seq 200); do owned org.appjail.Helper1 && owned org.freedesktop.PolicyKit1 && break; sleep 0.1; done
runuser -u member -- appjail doctor || true
"""

# ~1.5 min a system here; downloads from the registry may take longer elsewhere
pytestmark = [pytest.mark.once_per_run, pytest.mark.timeout(900)]


@pytest.fixture(params=["12", "13"], ids=lambda release: f"debian{release}")
def system(request, tmp_path: Path) -> Iterator[DebianSystem]:
    debian = DebianSystem(request.param, tmp_path / "root")
    try:
        debian.create()
        debian.copy_tree(REPO, TREE)
        yield debian
    finally:
        debian.remove()


def runtime_set(release: str) -> set[str]:
    return set((RUNTIME_SETS / f"debian{release}.txt").read_text().split())


def test_install_adds_only_appjail_and_what_it_needs_and_purge_leaves_nothing(system: DebianSystem):
    before, enabled_before = system.installed(), system.enabled_units()
    files_before = system.files(skip=(TREE.lstrip("/"),))

    install = system.run(f"cd {TREE} && ./scripts/install")
    assert "the kill switch held" in install.stdout and "demo finished" in install.stdout, install.stdout

    after = system.installed()
    added = sorted(set(after) - set(before))
    size_mb = sum(after[name] for name in added) / 1024
    print(f"Debian {system.release}: {len(added)} packages added, {size_mb:.0f} MB: {' '.join(added)}")
    assert "appjail" in added and "appjail-demo" not in added
    assert set(added) <= runtime_set(system.release), " ".join(sorted(set(added) - runtime_set(system.release)))
    assert system.enabled_units() == enabled_before, "the install enabled a unit"
    assert system.run("appjail --version").stdout == f"appjail {appjail.__version__}\n"

    doctor = system.run(DOCTOR, own_network=True).stdout
    assert "appjail-helper answers on the system bus" in doctor, doctor
    assert "you may run programs in jails" in doctor, doctor
    system.end_processes()
    assert "Traceback" not in (system.root / "tmp/helper.log").read_text()

    system.run(f"apt-get install -y -qq --no-install-recommends {UNIT_TEST_PACKAGES} >/dev/null")
    # the tree's code, laid out as installed (pyproject's package-dir: desktop/ is appjail.desktop)
    units = system.run(f"cd {TREE} && ln -s ../desktop appjail/desktop && "
                       f"python3 -m pytest -q -p no:cacheprovider --basetemp={TREE}/.unit-tmp tests/unit", check=False)
    assert units.returncode == 0, units.stdout[-4000:] + units.stderr[-2000:]

    owned = system.run("dpkg -L appjail").stdout.split()
    # what the helper makes at run time, gone with the package too
    system.run("mkdir -p /run/appjail/tunnels /dev/net && touch /dev/net/appjail-tun")
    system.run("apt-get purge -y -qq appjail >/dev/null")
    left = [path for path in owned if (system.root / path.lstrip("/")).is_file()]
    assert left == [], left
    new = system.files(skip=(TREE.lstrip("/"),)) - files_before
    assert [path for path in new if "appjail" in path] == []
    passwd = (system.root / "etc/passwd").read_text() + (system.root / "etc/group").read_text()
    assert not re.search(r"^appjail", passwd, re.M)
