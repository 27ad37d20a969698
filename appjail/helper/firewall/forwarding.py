"""IPv4 forwarding, switched on per interface and put back as it was.

Linux decides whether to forward a packet by the forwarding flag of the
interface it came in on. Jail traffic comes in on the jail's veth (ours), and
the replies come in on the egress: the uplink, or the VPN interface, which a
VPN client may delete and recreate at any time. So appjail switches on the
egress interfaces and `conf/default` (for interfaces born later), never
`ip_forward` / `conf/all`, and writes down the old values first so that the
last jail, or reconcile after a crash, restores them. While anything was
switched on, the guard chain (see rules.build_guard_rules) drops the
forwarding the host did not do before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from typing import Any

from ..kernel import netns
from .backends import FirewallBackend
from .rules import PREFIX

DEFAULT = "default"


def _key(ifname: str) -> str:
    return f"net/ipv4/conf/{ifname}/forwarding"


class Forwarding:
    """The record of what was switched on, kept in a file under the state dir."""

    def __init__(self, record: Path, firewall: FirewallBackend, system: Any = netns) -> None:
        """system: where sysctls are read and written (the netns module, or a stand-in)."""
        self.record = record
        self.firewall = firewall
        self.system = system

    def _load(self) -> dict | None:
        try:
            return json.loads(self.record.read_text())
        except FileNotFoundError:
            return None

    def _save(self, data: dict) -> None:
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.record)

    def enable(self, ifnames: list[str], all_ifnames: list[str]) -> None:
        """Switch forwarding on for ifnames and for interfaces born from now on."""
        data = self._load()
        if data is None:
            host_forwarding = [i for i in all_ifnames if not i.startswith(PREFIX)
                               and self._read(i) == "1"]
            data = {"original": {}, "host_forwarding": host_forwarding}
        original = data["original"]
        wanted = [name for name in [DEFAULT, *ifnames] if name not in original]
        values = {name: self._read(name) for name in wanted}
        changes = {name: value for name, value in values.items() if value not in ("1", None)}
        if not changes:
            return
        original.update(changes)
        # guard before switching, record before guarding: a crash in between
        # leaves something reconcile knows how to undo
        self._save(data)
        self.firewall.set_guard(data["host_forwarding"])
        for name in changes:
            self._write(name, "1")

    def restore(self, all_ifnames: list[str]) -> None:
        """Put every flag back; interfaces born meanwhile get the old default."""
        data = self._load()
        if data is None:
            return
        original = data["original"]
        default = original.get(DEFAULT)
        if default is not None:
            for ifname in all_ifnames:
                if not (ifname.startswith(PREFIX) or ifname in data["host_forwarding"]
                        or ifname in original):
                    self._write(ifname, default)
        for key, old in original.items():  # every key recorded, whether listed or not
            self._write(key, old)
        self.firewall.set_guard(None)
        self.record.unlink()

    def active(self) -> bool:
        return self.record.exists()

    def guard_ifnames(self) -> list[str] | None:
        """The interfaces the guard lets through while forwarding is switched on; None: no guard."""
        data = self._load()
        return None if data is None else data["host_forwarding"]

    def _read(self, ifname: str) -> str | None:
        """The flag, or None for an interface that does not exist (yet)."""
        try:
            return self.system.read_sysctl(_key(ifname))
        except FileNotFoundError:
            return None

    def _write(self, ifname: str, value: str) -> None:
        try:
            self.system.write_sysctl(_key(ifname), value)
        except FileNotFoundError:  # the interface is gone: nothing to restore
            pass
