"""Who hears the helper's signals: a jail's owner and managers, never the whole bus.

A jail's name is its owner's business (README, security model), so
JailAdded, JailRemoved and VpnChanged are not broadcast: each is sent as a
unicast signal (destination set) to every bus connection that may know of
the jail: one whose method call polkit let through, of the jail's owner, or
one for which polkit's last answer about org.appjail.manage was yes. The bus
daemon delivers a message with a destination to that connection, whatever
its match rules, and to nobody else (eavesdropping is denied on the system
bus). So a client that wants the signals calls the helper once (WhoAmI, say)
on the connection it listens on, and matches them by interface and member
as before.

A connection is known from its first call (its uid from the bus daemon, see
authz.identify) and forgotten when it leaves the bus (NameOwnerChanged):
the bus daemon reports the leaving after every message the connection sent,
so none is remembered for good.
"""

from __future__ import annotations

from dataclasses import dataclass

import dbus
import dbus.lowlevel

from ... import interface as api

BUS_DAEMON = "org.freedesktop.DBus"
BUS_DAEMON_PATH = "/org/freedesktop/DBus"


@dataclass
class _Listener:
    uid: int
    served: bool = False   # polkit let one of its method calls through
    manager: bool = False  # polkit's last answer for org.appjail.manage


class Audience:
    """The connections that called the helper, by unique name, and what polkit said of them."""

    def __init__(self, bus: dbus.Bus) -> None:
        self.bus = bus
        self._listeners: dict[str, _Listener] = {}
        # arg2 '': the name lost its owner (a unique name: the connection left)
        bus.add_signal_receiver(self._owner_changed, "NameOwnerChanged", BUS_DAEMON, BUS_DAEMON,
                                BUS_DAEMON_PATH, arg2="")

    def met(self, sender: str, uid: int) -> None:
        """A call came from `sender`, whose uid the bus daemon told."""
        self._listeners.setdefault(sender, _Listener(uid))

    def answered(self, sender: str, action: str, allowed: bool) -> None:
        """Polkit answered about `sender` and `action`."""
        listener = self._listeners.get(sender)
        if listener is None:
            return
        if action == api.ACTION_MANAGE:
            listener.manager = allowed
        elif allowed:
            listener.served = True

    def recipients(self, owner_uid: int) -> list[str]:
        """The connections that may hear of a jail of `owner_uid`."""
        return [name for name, listener in self._listeners.items()
                if listener.served and (listener.uid == owner_uid or listener.manager)]

    def send(self, owner_uid: int, member: str, signature: str, *args) -> None:
        """Signal `member` of the helper's interface to each recipient for `owner_uid`."""
        for name in self.recipients(owner_uid):
            message = dbus.lowlevel.SignalMessage(api.OBJECT_PATH, api.INTERFACE, member)
            message.append(*args, signature=signature)
            message.set_destination(name)
            self.bus.send_message(message)

    def _owner_changed(self, name: str, _old_owner: str, _new_owner: str) -> None:
        self._listeners.pop(name, None)
