"""Jail traffic through the host's other firewalls, while jails exist, and not a moment longer.

Every base chain on the forward hook must let a packet pass; appjail's own
chain deciding is not enough when Docker, ufw, firewalld or a hand-made
FORWARD policy DROP sits beside it. So, from the first jail to the last:

* x_tables (iptables-nft and iptables-legacy, each when its filter table is
  in use): two rules tagged with the comment `appjail`, accepting what comes
  in on an `aj-+` interface and the replies and published-port traffic going
  out to one. With Docker they go into DOCKER-USER, the chain Docker
  documents for other software and never rewrites. With ufw, and with any
  other FORWARD that drops, they go to the top of FORWARD (below appjail's
  own hooks) rather than into ufw's chains: ufw owns ufw-before-forward and
  ufw-user-forward, rebuilds them from /etc/ufw on every reload and enable,
  and `ufw route allow` would write /etc/ufw/user.rules, a lasting change
  that outlives appjail; with MANAGE_BUILTINS=no (ufw's default) ufw leaves
  FORWARD's own rules alone.
* firewalld: only through its D-Bus API (runtime, never its tables): the
  interface wildcard `aj-+` goes into a zone that forwards (`trusted`, as
  Podman's netavark does for its bridges), again after firewalld reloads or
  restarts, and out with the last jail. An admin's own binding of `aj-+` is
  respected and never removed.
* an admin's own nftables chain that drops: left alone (appjail.hostfirewall
  tells doctor what line to add).

None of this widens what a jail may do: appjail's own chain still decides
every packet of a jail (kill switch, deny ranges, INPUT drop). Work done is
recorded in a file before it is done, so that reconcile after a crash can
take it back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ...hostfirewall import DEFAULT_FIREWALLD_ZONE, IFACES_XT, TAG, XtPlace, xt_place, xt_tagged

if TYPE_CHECKING:
    import dbus
    from dbus.bus import BusConnection

log = logging.getLogger(__name__)

FIREWALLD = "org.fedoraproject.FirewallD1"
FIREWALLD_PATH = "/org/fedoraproject/FirewallD1"
FIREWALLD_ZONE_IFACE = FIREWALLD + ".zone"
COMMENT = ("-m", "comment", "--comment", TAG, "-j", "ACCEPT")
# direction -> the rule; "-o" carries no new connection into a jail
RULES = {"-i": ("-i", IFACES_XT, *COMMENT),
         "-o": ("-o", IFACES_XT, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT", *COMMENT)}
XTABLES = ("iptables-nft", "iptables-legacy")
LEGACY_TABLES = Path("/proc/thread-self/net/ip_tables_names")


class CoexistError(RuntimeError):
    """Another firewall refused to let jail traffic through; the message is one sentence."""


class Coexistence:
    """The host's other firewalls, opened for appjail's interfaces while jails exist.

    firewalld may take seconds to answer (it loads before it serves), or
    never (hung), and nobody else may wait meanwhile: its signals arrive on
    the helper's connection, in the main loop, and are served in a thread of
    their own; every call to it goes over a connection of this object's, with
    no main loop (a blocking call on the helper's connection, from any
    thread, holds up the main loop's own calls on it). The engine calls from
    its workers; a lock keeps them and the signals' threads apart.
    """

    def __init__(self, record: Path, bus: BusConnection | None = None, firewalld_zone: str = DEFAULT_FIREWALLD_ZONE,
                 bus_address: str | None = None) -> None:
        """bus: the helper's connection, for firewalld's signals (None: firewalld is not looked after);
        bus_address: that bus's (None: the system bus), for the calls' own connection."""
        self.record = record
        self.bus = bus
        self.zone = firewalld_zone
        self._open = False
        self._lock = threading.RLock()
        self._calls: BusConnection | None = None
        if bus is not None:
            import dbus.mainloop

            self._calls = dbus.bus.BusConnection(bus_address or dbus.bus.BUS_SYSTEM,
                                                 mainloop=dbus.mainloop.NULL_MAIN_LOOP)
            bus.add_signal_receiver(self._firewalld_reloaded, "Reloaded", FIREWALLD, FIREWALLD)
            bus.watch_name_owner(FIREWALLD, self._firewalld_owner_changed)

    # -- the engine's three calls ------------------------------------------

    def open(self) -> None:
        """Let jail traffic pass every firewall appjail knows; a no-op while open."""
        with self._lock:
            if self._open:
                return
            done = self._load()
            for binary in XTABLES:
                listing = self._listing(binary)
                place = xt_place(listing) if listing is not None else None
                if place is None:
                    continue
                if binary not in done["xtables"]:
                    done["xtables"].append(binary)
                    self._save(done)
                _remove_tagged(binary, listing)  # left by an earlier helper: put back at the right place
                for offset, rule in enumerate(RULES.values()):
                    _xt(binary, "-I", place.chain, str(place.position + offset), *rule)
                log.info("%s: %s; accepting %s in %s", binary, place.framework, IFACES_XT, place.chain)
            self._firewalld_add(done)
            self._open = True

    def close(self) -> list[str]:
        """Take back everything the record names; what was removed, for the log."""
        with self._lock:
            self._open = False
            done = self._load()
            removed = []
            for binary in done["xtables"]:
                listing = self._listing(binary)
                if listing is not None and _remove_tagged(binary, listing):
                    removed.append(f"{binary} rules {TAG}")
            if done["firewalld_zone"] and self.bus is None:
                # no bus to reach firewalld by: the binding stays recorded for a helper that has one
                self._save({**done, "xtables": []})
                return removed
            if done["firewalld_zone"] and self._firewalld_remove(done["firewalld_zone"]):
                removed.append(f"firewalld zone {done['firewalld_zone']} interface {IFACES_XT}")
            self.record.unlink(missing_ok=True)
            return removed

    def check(self) -> list[str]:
        """After a change of the host's firewall: the x_tables openings again wherever they are now
        missing or out of place (a dockerd started later: DOCKER-USER; ufw enabled; a table restored
        from an old dump); what was done, for the log. firewalld tells by its own signals."""
        if not self._open:
            return []
        misplaced = []
        for binary in XTABLES:
            listing = self._listing(binary)
            place = xt_place(listing) if listing is not None else None
            if place is not None and not _in_place(listing, place):
                misplaced.append(f"{binary}: {place.framework}, accepting {IFACES_XT} in {place.chain} again")
        if misplaced:
            with self._lock:
                self._open = False
                self.open()
        return misplaced

    def sweep(self, jails_exist: bool) -> list[str]:
        """After a helper start: open again for adopted jails, else take back what a crash left."""
        if not jails_exist:
            return self.close()
        try:
            self.open()
        except CoexistError as exc:  # the jails keep running; the next creation tries again
            log.error("%s", exc)
        return []

    # -- x_tables ------------------------------------------------------------

    @staticmethod
    def _listing(binary: str) -> str | None:
        """`iptables -S` of the backend's filter table, or None where that table is not in use.

        Never creates the table: listing it would (legacy) or might (nft).
        """
        if shutil.which(binary) is None:
            return None
        if binary == "iptables-legacy":
            try:
                in_use = "filter" in LEGACY_TABLES.read_text().split()
            except FileNotFoundError:  # no x_tables in this kernel
                in_use = False
        else:
            in_use = _run(["nft", "list", "table", "ip", "filter"], check=False).returncode == 0
        return _xt(binary, "-S") if in_use else None

    # -- firewalld -------------------------------------------------------------

    def _zones(self) -> dbus.Interface:
        import dbus

        return dbus.Interface(self._calls.get_object(FIREWALLD, FIREWALLD_PATH, introspect=False),
                              FIREWALLD_ZONE_IFACE)

    def _firewalld_running(self) -> bool:
        return self._calls is not None and bool(self._calls.name_has_owner(FIREWALLD))

    def _firewalld_add(self, done: dict) -> None:
        import dbus

        try:
            if not self._firewalld_running():
                return
            zones = self._zones()
            current = str(zones.getZoneOfInterface(IFACES_XT))
            if current and current != done["firewalld_zone"]:
                log.info("firewalld: %s is in zone %s already (not appjail's doing): left so", IFACES_XT, current)
                return
            if not current:
                done["firewalld_zone"] = self.zone
                self._save(done)
                zones.addInterface(self.zone, IFACES_XT)
                log.info("firewalld: %s added to zone %s", IFACES_XT, self.zone)
        except dbus.DBusException as exc:
            raise CoexistError(f"firewalld refused to put {IFACES_XT} into its zone {self.zone} "
                               f"({exc.get_dbus_message()})") from None

    def _firewalld_remove(self, zone: str) -> bool:
        import dbus

        try:
            if not self._firewalld_running():
                return False  # gone, and its runtime configuration with it
            zones = self._zones()
            if str(zones.getZoneOfInterface(IFACES_XT)) != zone:
                return False
            zones.removeInterface(zone, IFACES_XT)
        except dbus.DBusException as exc:
            log.warning("firewalld: could not take %s out of zone %s: %s", IFACES_XT, zone,
                        exc.get_dbus_message())
            return False
        return True

    def _firewalld_reloaded(self) -> None:
        """A reload drops runtime changes: put appjail's interfaces back while jails exist."""
        if self._open:
            self._reapply_aside()

    def _firewalld_owner_changed(self, owner: str) -> None:
        """A (re)started firewalld knows nothing of appjail's interfaces. It takes its name before it
        has loaded its configuration, but answers no call until it has: what it says is loaded."""
        if owner and self._open:
            self._reapply_aside()

    def _reapply_aside(self) -> None:
        """Off the main loop the signal came on: that loop waits on no one, and firewalld answers only
        once it has loaded, seconds after it took its name (or never, if it hangs)."""
        threading.Thread(target=self._reapply, name="firewalld-reapply", daemon=True).start()

    def _reapply(self) -> None:
        with self._lock:
            if not self._open:  # the last jail went meanwhile
                return
            try:
                self._firewalld_add(self._load())
            except CoexistError as exc:
                log.error("%s", exc)

    # -- the record --------------------------------------------------------------

    def _load(self) -> dict:
        try:
            return json.loads(self.record.read_text())
        except FileNotFoundError:
            return {"xtables": [], "firewalld_zone": None}

    def _save(self, done: dict) -> None:
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(done))
        os.replace(tmp, self.record)


def _in_place(listing: str, place: XtPlace) -> bool:
    """Whether appjail's two rules are where they belong: the PLACE's position of its chain, in order."""
    chain = [line for line in listing.splitlines() if line.startswith(f"-A {place.chain} ")]
    found = xt_tagged("\n".join(chain[place.position - 1:place.position + 1]))
    return found == [(place.chain, direction) for direction in RULES]


def _remove_tagged(binary: str, listing: str) -> bool:
    tagged = xt_tagged(listing)
    for chain, direction in tagged:
        _xt(binary, "-D", chain, *RULES[direction])
    return bool(tagged)


def _xt(binary: str, *args: str) -> str:
    """One iptables command on the filter table, waiting for the xtables lock as appjail's own rules do."""
    return _run([binary, "-w", "-t", "filter", *args]).stdout


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise CoexistError(f"{argv[0]} refused a change: {result.stderr.strip() or result.returncode}")
    return result
