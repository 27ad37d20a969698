"""Declared jails kept as their files say, from the helper's main loop.

At the start, on `appjail reload` and every RETRY_S seconds the Keeper
reads /etc/appjail/jails.d (engine/declared.py), compares the files with
root's jails and the digests they were made from (recorded in the run
directory, so a restarted helper keeps an adopted jail whose file did not
change), and has the Supervisor make, remove or make again the jails that
differ: a jail gone (a helper started after a reboot, a jail stopped by
hand or lost), one whose tunnel's daemon ended, or one whose tunnel did
not come up, is made again on the next pass, so a declared jail comes back
once its tunnel's server answers again. Each bad file, and each jail that
could not be made, is one sentence in the log (once, when it changes) and
in `errors` (WhoAmI's declared_errors, for `appjail doctor`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from gi.repository import GLib

from ..engine import declared as files
from .supervisor import Supervisor

log = logging.getLogger(__name__)

RETRY_S = 5  # a missing or broken declared jail is made again this often
RECORD = "declared.json"  # in the run directory: name -> the digest its jail was made from

Summary = dict[str, list[str]]  # created, recreated, removed, errors: Reload's answer
FAILED = {"created": "made", "recreated": "made again", "removed": "removed"}


class Keeper:
    def __init__(self, supervisor: Supervisor, directory: Path, run_dir: Path) -> None:
        self.supervisor = supervisor
        self.directory = directory
        self.record = run_dir / RECORD
        self.declared: dict[str, files.Declared] = {}
        self.errors: dict[str, str] = {}  # a file's path -> what is wrong with it or its jail
        self._logged: dict[str, str] = {}
        self._made = self._load()
        self._busy: set[str] = set()  # names being made or removed

    def start(self) -> None:
        """Make the declared jails now, and keep them from then on."""
        self.reload(lambda _summary: None)
        GLib.timeout_add_seconds(RETRY_S, self._again)

    def reload(self, done: Callable[[Summary], None]) -> None:
        """Read the files again and make the jails agree: done(what was done) once it is."""
        reading = files.read_declared(self.directory)
        self.declared = reading.jails
        self.errors = dict(reading.errors)
        self._converge(done)

    def _again(self) -> bool:
        self._converge(lambda _summary: None)
        return True

    def _converge(self, done: Callable[[Summary], None]) -> None:
        engine = self.supervisor.engine
        root = {jail.name: jail for jail in engine.list() if jail.owner_uid == files.OWNER_UID}
        broken = {name for name, jail in root.items()
                  if name in self._made and jail.tunnel is not None and not engine.tunnel_running(jail)}
        todo = files.plan(self.declared, self._made, set(root), broken)
        summary: Summary = {"created": [], "recreated": [], "removed": [], "errors": []}
        steps = [(name, "removed") for name in todo.remove] + [(name, "recreated") for name in todo.recreate] \
            + [(name, "created") for name in todo.create]
        steps = [(name, what) for name, what in steps if name not in self._busy]
        left = [len(steps)]

        def finished(name: str, what: str, error: BaseException | None) -> None:
            self._busy.discard(name)
            source = str(self.directory / f"{name}{files.SUFFIX}")
            if error is None:
                summary[what].append(name)
                if source in self.errors and name in self.declared:
                    del self.errors[source]
            else:
                self.errors[source] = f"{source}: jail {name!r} could not be {FAILED[what]}: {error}"
                summary["errors"].append(self.errors[source])
            left[0] -= 1
            if not left[0]:
                self._settled(summary, done)

        for name, what in steps:
            self._busy.add(name)
            if what == "removed":
                self._remove(name, lambda error, name=name: finished(name, "removed", error))
            elif what == "recreated":
                self._remove(name, lambda error, name=name: finished(name, "recreated", error) if error
                             else self._make(name, lambda error: finished(name, "recreated", error)))
            else:
                self._make(name, lambda error, name=name: finished(name, "created", error))
        if not steps:
            self._settled(summary, done)

    def _make(self, name: str, done: Callable[[BaseException | None], None]) -> None:
        wanted = self.declared[name]

        def made(error: BaseException | None) -> None:
            if error is None:
                self._made[name] = wanted.digest
            done(error)
        try:
            self.supervisor.keep(wanted.spec(), files.tunnels(wanted), made)
        except Exception as exc:  # noqa: BLE001 - one jail's failure, the others go on
            done(exc)

    def _remove(self, name: str, done: Callable[[BaseException | None], None]) -> None:
        def removed(error: BaseException | None) -> None:
            if error is None:
                self._made.pop(name, None)
            done(error)
        try:
            self.supervisor.stop(self.supervisor.root, name, removed)
        except Exception as exc:  # noqa: BLE001 - as above
            done(exc)

    def _settled(self, summary: Summary, done: Callable[[Summary], None]) -> None:
        """After a pass: the record, the sources `ls` shows, the log (each sentence once), the answer."""
        self._save()
        self.supervisor.declared_sources = {(files.OWNER_UID, name): self.declared[name].source
                                            for name in self._made if name in self.declared}
        for source, sentence in self.errors.items():
            if self._logged.get(source) != sentence:
                log.error("declared jail: %s", sentence)
        self._logged = dict(self.errors)
        done({**summary, "errors": sorted(self.errors.values())})

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(data, dict) else {}

    def _save(self) -> None:
        staged = self.record.with_name(f".{self.record.name}.new")
        staged.write_text(json.dumps(self._made))
        os.replace(staged, self.record)
