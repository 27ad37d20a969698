"""Jail records under /run/appjail: written before anything is created.

/run is a tmpfs, so records vanish at boot together with the namespaces and
rules they describe. A record says whose jail it is, its kernel name (the
namespace, veth, chain and tags: `aj-NAME`, or a name of its own when another
jail holds that, see Engine), which slot (addresses, routing table) it holds
and whether its creation finished; it is stored as `ID.json` for its kernel
name `aj-ID`, the one name no two jails share; reconcile reads them after a
helper crash to adopt finished jails and remove the rest.

Records are replaced atomically (rename) but never fsync'ed: what a helper
crash leaves is in the page cache, and what a machine crash would lose
describes kernel objects that die with the machine anyway. (On a disk, the
two fsyncs of each creation cost ~2.5 ms.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ...model import JailSpec, ValidationError, validate_kernel_name, wire_options
from ..firewall.rules import PREFIX

RUN_DIR = Path("/run/appjail")
CREATING = "creating"
READY = "ready"


@dataclass
class JailRecord:
    spec: JailSpec
    owner_uid: int
    slot: int | None  # None: a tunnel jail, which takes no address from the pool
    status: str = CREATING
    tunnel: dict | None = None  # a tunnel jail's public description (never a key)
    kernel_name: str = ""  # aj-ID; "" means aj-NAME

    def __post_init__(self) -> None:
        self.kernel_name = validate_kernel_name(self.kernel_name or PREFIX + self.spec.name)

    def to_json(self) -> str:
        return json.dumps({"spec": wire_options(self.spec), "owner_uid": self.owner_uid, "slot": self.slot,
                           "status": self.status, "tunnel": self.tunnel, "kernel_name": self.kernel_name})

    @classmethod
    def from_json(cls, text: str) -> JailRecord:
        data = json.loads(text)
        # an option a record lacks (written before the option existed) takes its default,
        # a record without a kernel name is one of aj-NAME (written before names were per owner)
        return cls(JailSpec(**data["spec"]), int(data["owner_uid"]),
                   None if data["slot"] is None else int(data["slot"]), data["status"], data.get("tunnel"),
                   data.get("kernel_name", ""))


class StateStore:
    def __init__(self, run_dir: Path = RUN_DIR) -> None:
        self.run_dir = run_dir
        self.jails_dir = run_dir / "jails"
        self.jails_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, kernel_name: str) -> Path:
        return self.jails_dir / f"{validate_kernel_name(kernel_name)[len(PREFIX):]}.json"

    def save(self, record: JailRecord) -> None:
        path = self._path(record.kernel_name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(record.to_json())
        os.replace(tmp, path)

    def delete(self, kernel_name: str) -> None:
        self._path(kernel_name).unlink(missing_ok=True)

    def load_all(self) -> tuple[list[JailRecord], list[Path]]:
        """(records, unreadable files): a torn or foreign file is not a jail."""
        records, bad = [], []
        for path in sorted(self.jails_dir.iterdir()):
            try:
                record = JailRecord.from_json(path.read_text())
                if path != self._path(record.kernel_name):
                    raise ValueError("file name does not match the jail")
                records.append(record)
            except (OSError, ValueError, KeyError, TypeError, ValidationError):
                bad.append(path)
        return records, bad
