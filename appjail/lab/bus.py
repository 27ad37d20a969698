"""A private system bus with its own polkitd, for the tests and the demo.

The bus is a real `dbus-daemon` of type "system" on a socket of its own, with
the bus policies installed under /usr/share/dbus-1/system.d and any extra
policy files given (the repository's own, in the tests). `polkitd` is
started against it, so polkit reads the real action and rules directories.
Nothing of the machine's own bus (if it has one) is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

from appjail.lab.errors import LabError
from appjail.lab.process import READY_TIMEOUT, stop, wait_for_output

DBUS_DAEMON = "/usr/bin/dbus-daemon"
POLKITD = "/usr/lib/polkit-1/polkitd"
SYSTEM_POLICY_DIR = "/usr/share/dbus-1/system.d"
# polkit/ file -> where polkitd reads it (it reads nowhere else)
POLKIT_TARGETS = {
    "org.appjail.policy": Path("/usr/share/polkit-1/actions/org.appjail.policy"),
    "50-appjail.rules": Path("/etc/polkit-1/rules.d/50-appjail.rules"),
}

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>{system_policies}</includedir>
{extra}</busconfig>
"""


def install_temporarily(source: Path, target: Path, stack: ExitStack) -> None:
    """Put `source` at `target` until `stack` closes, then restore what was there."""
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    previous = target.read_bytes() if target.exists() else None
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(0o644)
    if previous is None:
        stack.callback(target.unlink, missing_ok=True)
    else:
        stack.callback(target.write_bytes, previous)


@contextmanager
def polkit_files_installed(polkit_dir: Path) -> Iterator[None]:
    """A checkout's polkit action policy and rules, where polkitd reads them, for a while."""
    with ExitStack() as stack:
        for name, target in POLKIT_TARGETS.items():
            install_temporarily(polkit_dir / name, target, stack)
        yield


def bus_config(socket: Path, extra_policies: Sequence[Path] = (),
               system_policies: str = SYSTEM_POLICY_DIR) -> str:
    """The daemon's configuration: the system bus's default policy, on `socket`."""
    extra = "".join(f"  <include>{escape(str(path))}</include>\n" for path in extra_policies)
    return _CONFIG.format(socket=escape(str(socket)), system_policies=escape(system_policies),
                          extra=extra)


class PrivateSystemBus:
    """`with PrivateSystemBus() as bus:` a system bus at `bus.address`, polkitd on it."""

    def __init__(self, extra_policies: Sequence[Path] = ()) -> None:
        self.extra_policies = list(extra_policies)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def __enter__(self) -> PrivateSystemBus:
        self._dir = tempfile.TemporaryDirectory(prefix="appjail-bus-")
        directory = Path(self._dir.name)
        directory.chmod(0o755)  # every user connects to the socket inside
        try:
            self._start_daemon(directory)
            self._start_polkitd(directory)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        stop(*reversed(self._procs))
        self._procs.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _start_daemon(self, directory: Path) -> None:
        socket = directory / "system_bus_socket"
        config = directory / "system.conf"
        config.write_text(bus_config(socket, self.extra_policies))
        proc = subprocess.Popen([DBUS_DAEMON, "--nofork", "--nopidfile", f"--config-file={config}",
                                 "--print-address=1", "--nosyslog"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=open(directory / "dbus.log", "wb"))
        self._procs.append(proc)
        assert proc.stdout is not None
        wait_for_output(proc, proc.stdout, b"\n", "dbus-daemon", directory / "dbus.log")
        self.address = f"unix:path={socket}"

    def _start_polkitd(self, directory: Path) -> None:
        log_path = directory / "polkitd.log"
        proc = subprocess.Popen([POLKITD], stdin=subprocess.DEVNULL,
                                stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                                env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address})
        self._procs.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while b"Acquired the name" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"polkitd did not start: {log_path.read_text(errors='replace')}")
            time.sleep(0.02)
