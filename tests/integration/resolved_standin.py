"""A stand-in for systemd-resolved on the tests' private system bus: its Manager's GetLink and
each link's DNS property, as the real one answers them (org.freedesktop.resolve1(5)).

    python resolved_standin.py BUS_ADDRESS IFINDEX=A.B.C.D ...

Prints `ready` once it owns the name, then `asked IFINDEX` for each GetLink.
"""

import sys

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.freedesktop.resolve1"
LINK = "org.freedesktop.resolve1.Link"
PROPERTIES = "org.freedesktop.DBus.Properties"


class Link(dbus.service.Object):
    def __init__(self, bus, path: str, servers: list[str]) -> None:
        super().__init__(bus, path)
        self.servers = servers

    @dbus.service.method(PROPERTIES, in_signature="ss", out_signature="v")
    def Get(self, interface: str, name: str):
        if (interface, name) != (LINK, "DNS"):
            raise dbus.exceptions.DBusException("no such property", name="org.freedesktop.DBus.Error.UnknownProperty")
        return dbus.Array([dbus.Struct((dbus.Int32(2), dbus.Array([int(b) for b in s.split(".")], signature="y")))
                           for s in self.servers], signature="(iay)", variant_level=1)


class Manager(dbus.service.Object):
    def __init__(self, bus, links: dict[int, list[str]]) -> None:
        super().__init__(bus, "/org/freedesktop/resolve1")
        self.links = {index: Link(bus, f"/org/freedesktop/resolve1/link/_3{index}", servers)
                      for index, servers in links.items()}

    @dbus.service.method("org.freedesktop.resolve1.Manager", in_signature="i", out_signature="o")
    def GetLink(self, index: int):
        print(f"asked {index}", flush=True)
        if index not in self.links:
            raise dbus.exceptions.DBusException("no such link", name="org.freedesktop.resolve1.NoSuchLink")
        return dbus.ObjectPath(f"/org/freedesktop/resolve1/link/_3{index}")


def main(address: str, *links: str) -> None:
    DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(address)
    table: dict[int, list[str]] = {}
    for link in links:
        index, _, server = link.partition("=")
        table.setdefault(int(index), []).append(server)
    manager = Manager(bus, table)
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)
    print("ready", flush=True)
    GLib.MainLoop().run()
    del name, manager


if __name__ == "__main__":
    main(*sys.argv[1:])
