"""A stand-in for firewalld on the tests' private system bus that takes its name and answers its zone
calls only when told, as the real one does while it loads its configuration (it owns its name from
the start, and serves calls once loaded): getZoneOfInterface, addInterface, removeInterface of
org.fedoraproject.FirewallD1.zone, with the real one's signatures (test_coexist checks them against
the real firewalld).

    python firewalld_standin.py BUS_ADDRESS

Prints `ready` once it owns the name, then `asked METHOD ARGS...` for each call as it comes; a line
`loaded` on stdin answers every call held and every later one at once.
"""

import sys

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.fedoraproject.FirewallD1"
PATH = "/org/fedoraproject/FirewallD1"
ZONE = NAME + ".zone"
SIGNATURES = {"getZoneOfInterface": ("s", "s"), "addInterface": ("ss", "s"), "removeInterface": ("ss", "s")}


class Zones(dbus.service.Object):
    def __init__(self, bus) -> None:
        super().__init__(bus, PATH)
        self.bindings: dict[str, str] = {}  # interface -> zone
        self.held: list = []  # the answers waiting for `loaded`
        self.loaded = False

    def _answer(self, method: str, args: tuple[str, ...], reply) -> None:
        print("asked", method, *args, flush=True)
        answer = lambda: reply(self._do(method, *args))
        if self.loaded:
            answer()
        else:
            self.held.append(answer)

    def _do(self, method: str, *args: str) -> str:
        if method == "getZoneOfInterface":
            return self.bindings.get(args[0], "")
        zone, interface = args
        if method == "addInterface":
            self.bindings[interface] = zone
        else:
            self.bindings.pop(interface, None)
        return zone

    @dbus.service.method(ZONE, *SIGNATURES["getZoneOfInterface"], async_callbacks=("reply", "error"))
    def getZoneOfInterface(self, interface, reply, error):
        self._answer("getZoneOfInterface", (str(interface),), reply)

    @dbus.service.method(ZONE, *SIGNATURES["addInterface"], async_callbacks=("reply", "error"))
    def addInterface(self, zone, interface, reply, error):
        self._answer("addInterface", (str(zone), str(interface)), reply)

    @dbus.service.method(ZONE, *SIGNATURES["removeInterface"], async_callbacks=("reply", "error"))
    def removeInterface(self, zone, interface, reply, error):
        self._answer("removeInterface", (str(zone), str(interface)), reply)

    def load(self, *_args) -> bool:
        line = sys.stdin.readline()
        if line == "loaded\n":
            self.loaded = True
            for answer in self.held:
                answer()
            self.held.clear()
        return bool(line)  # watched until stdin closes


def main(address: str) -> None:
    DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(address)
    zones = Zones(bus)
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)
    GLib.io_add_watch(sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, zones.load)
    print("ready", flush=True)
    GLib.MainLoop().run()
    del name


if __name__ == "__main__":
    main(*sys.argv[1:])
