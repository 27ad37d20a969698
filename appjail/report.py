"""Human-readable views of jails for `appjail ls` and `appjail inspect` (pure functions)."""

from __future__ import annotations

import pwd
import time

from .model import wire_defaults

NO_REPAIRS = {"count": 0, "last": 0, "what": ""}
COUNTER_NAMES = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "dropped_packets", "dropped_bytes")


def normalised(jail: dict) -> dict:
    """A jail as `--json` prints it: every documented key present (the bus omits nulls)."""
    result = {**wire_defaults(), "pids": [], "counters": {}, "tunnel": None, "ports_not_held": [],
              "repairs": NO_REPAIRS, "source": None, "forwarded_port": None, **jail}
    if "connections" in jail:  # inspect's answer (ls has neither)
        result.setdefault("blocked", [])
    result["counters"] = {name: result["counters"].get(name, 0) for name in COUNTER_NAMES}
    return result


def size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def rate(per_second: float) -> str:
    """A rate in the SI units a plot axis shows: B/s, kB/s, MB/s, GB/s."""
    for unit in ("B/s", "kB/s", "MB/s"):
        if abs(per_second) < 1000:
            return f"{per_second:.0f} {unit}" if unit == "B/s" else f"{per_second:.1f} {unit}"
        per_second /= 1000
    return f"{per_second:.1f} GB/s"


def count(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"


def owner(uid: int) -> str:
    """The user's name; the uid only when no name is known for it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def reference(jail: dict, viewer_uid: int) -> str:
    """How the viewer names the jail to the helper: NAME for its own, USER/NAME (UID/NAME) for another's."""
    if jail["owner_uid"] == viewer_uid:
        return jail["name"]
    try:
        return f"{pwd.getpwuid(jail['owner_uid']).pw_name}/{jail['name']}"
    except KeyError:
        return f"{jail['owner_uid']}/{jail['name']}"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def jail_list(jails: list[dict], now: float | None = None) -> str:
    """The table of `ls`; below it a line per tunnel jail and per jail with ports not held, too long for a column."""
    if not jails:
        return "no jails"
    rows = [("NAME", "OWNER", "ADDRESS", "VPN", "PROCESSES", "KEEP", "OUT", "IN", "DROPPED")]
    notes = []
    for jail in map(normalised, jails):
        counters = jail["counters"]
        rows.append((jail["name"], owner(jail["owner_uid"]), jail["address"], way_out(jail),
                     str(len(jail["pids"])), "yes" if jail["keep"] else "no",
                     size(counters["tx_bytes"]), size(counters["rx_bytes"]),
                     str(counters["dropped_packets"])))
        if jail["tunnel"]:
            notes.append(f"{jail['name']}: tunnel {tunnel_line(jail['tunnel'], now)}")
        if jail["ports_not_held"]:
            notes.append(f"{jail['name']}: {ports_not_held(jail)}")
        if jail["repairs"]["count"]:
            notes.append(f"{jail['name']}: {repaired(jail['repairs'])}")
        if jail["source"]:
            notes.append(f"{jail['name']}: declared in {jail['source']}")
    return "\n".join([table(rows), *([""] + notes if notes else [])])


def forwarded(status: dict) -> str:
    """The forwarded port's line: the port and its lease, or why there is none (yet, or any more)."""
    asked = f"{status['method']} from {status['gateway'] or 'no gateway'}"
    if status["state"] == "mapped":
        return (f"port {status['port']} ({asked}, lease until {clock(status['expires'])}, "
                f"renewed {count(status['renewals'], 'time', 'times')})")
    why = f": {status['error']}" if status["error"] else ""
    if status["state"] == "lost":
        return f"PORT LOST ({asked}{why}); asking again"
    return f"none yet ({asked}{why})"


def repaired(repairs: dict) -> str:
    """How often a host tool removed the jail's host-side rules and the helper put them back."""
    return (f"rules repaired {count(repairs['count'], 'time', 'times')}, last at {clock(repairs['last'])} "
            f"({repairs['what']}); the jail's own refusals held throughout")


def ports_not_held(jail: dict) -> str:
    """Published ports the restarted helper could not bind again (a host program took them meanwhile)."""
    return (f"PORTS NOT HELD: {', '.join(jail['ports_not_held'])}: the restarted helper could not bind "
            "them again (the helper's log says why: usually a program on the host took them meanwhile); "
            "the jail still gets their traffic from other machines, such a program the host's own (loopback)")


def way_out(jail: dict) -> str:
    """The VPN column: a --vpn jail's interface, a tunnel jail's type (DOWN, IDLE, CONNECTING when it is), or -."""
    if jail["tunnel"]:
        state = tunnel_state(jail["tunnel"])
        return jail["tunnel"]["type"] + ("" if state == "up" else f" {state.upper()}")
    return jail["vpn"] or "-"


def tunnel_line(tunnel: dict, now: float | None = None) -> str:
    """A tunnel jail's tunnel in one line: type, endpoint, state (up, idle, connecting, TUNNEL DOWN), handshake
    age, bytes."""
    state = tunnel_state(tunnel)
    return (f"{tunnel['type']} to {endpoint(tunnel)}, {'TUNNEL DOWN' if state == 'down' else state}, "
            f"{handshake(tunnel, now)}, "
            f"received {size(tunnel['rx_bytes'])}, sent {size(tunnel['tx_bytes'])}")


def tunnel_state(tunnel: dict) -> str:
    """up, idle (WireGuard without a session and nothing to send), connecting (OpenVPN's first connection:
    programs start once it is up) or down; older helpers sent only `up`."""
    return tunnel.get("state") or ("up" if tunnel["up"] else "down")


def endpoint(tunnel: dict) -> str:
    """Where the tunnel goes: WireGuard's peer endpoint, or the server OpenVPN is connected to."""
    return tunnel.get("endpoint") or tunnel.get("connected_to") or "?"


def handshake(tunnel: dict, now: float | None = None) -> str:
    """How long ago the latest handshake was (WireGuard), or since when it is connected (OpenVPN);
    the helper sends times, 0 for none yet."""
    now = time.time() if now is None else now
    if "connected_since" in tunnel:
        since = tunnel["connected_since"]
        return f"connected {age(now - since)} ago" if since else "not connected"
    if not tunnel["latest_handshake"]:
        return "no handshake yet"
    return f"handshake {age(now - tunnel['latest_handshake'])} ago"


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def tunnel_down(tunnel: dict) -> str:
    """Why a tunnel jail gets nothing through, for `inspect` and the inspector."""
    if tunnel_state(tunnel) == "connecting":
        return (f"CONNECTING: {tunnel['type']} has not connected yet; programs start once it has (or fail, "
                "and the jail goes, if it does not); until then the jail has no way out")
    if not tunnel["link_up"]:
        why = "its interface is down"
    elif "connected_since" in tunnel:
        why = "openvpn has ended"
    else:
        why = f"{tunnel['endpoint'] or 'the peer'} does not answer its handshakes"
    return f"TUNNEL DOWN: {why}; the jail has no other way out, so nothing leaks around it"


def kill_switch_blocking(jail: dict) -> bool:
    return bool(jail["vpn"]) and not jail.get("vpn_up", True)


def inspection(jail: dict, previous: dict | None = None, interval: float = 1.0, now: float | None = None) -> str:
    """The `inspect` page; rates when an earlier sample of the same jail is given."""
    jail = normalised(jail)
    counters = jail["counters"]
    before = normalised(previous)["counters"] if previous else None
    lines = [f"jail {jail['name']}: owner {owner(jail['owner_uid'])}, address {jail['address']}, "
             f"namespace {jail['netns']}"]
    if jail["tunnel"]:
        lines.append(f"tunnel    {tunnel_line(jail['tunnel'], now)}")
    elif jail["vpn"]:
        lines.append(f"vpn       {jail['vpn']} ({'up' if jail.get('vpn_up', True) else 'DOWN'})")
    else:
        lines.append("vpn       none (NAT through the host)")
    lines.append(f"dns       {', '.join(jail['dns']) or '-'}")
    if jail["publish"]:
        lines.append(f"published {', '.join(jail['publish'])}")
    if jail["forwarded_port"]:
        lines.append(f"forwarded {forwarded(jail['forwarded_port'])}")
    if jail["deny"] or jail["no_lan"]:
        lines.append(f"denied    {', '.join(jail['deny'] + (['LAN ranges'] if jail['no_lan'] else []))}")
    pids = jail["pids"]
    lines.append(f"running   {count(len(pids), 'process', 'processes')}"
                 + (f" ({', '.join(map(str, pids))})" if pids else ""))
    rows = [("", "PACKETS", "BYTES", "RATE")]
    for label, prefix in (("out", "tx"), ("in", "rx"), ("dropped", "dropped")):
        speed = "-"
        if before is not None:
            speed = rate((counters[f"{prefix}_bytes"] - before[f"{prefix}_bytes"]) / interval)
        rows.append((label, str(counters[f"{prefix}_packets"]), size(counters[f"{prefix}_bytes"]), speed))
    lines += ["", table(rows)]
    if kill_switch_blocking(jail):
        lines += ["", f"KILL SWITCH: {jail['vpn']} is down or missing; the jail's traffic is blocked "
                      f"({counters['dropped_packets']} packets dropped so far), nothing leaks around it"]
    elif jail["tunnel"] and not jail["tunnel"]["up"]:
        lines += ["", tunnel_down(jail["tunnel"])]
    elif counters["dropped_packets"] and before and counters["dropped_packets"] > before["dropped_packets"]:
        lines += ["", "dropping: the jail is sending traffic its rules refuse"]
    if jail["ports_not_held"]:
        lines += ["", ports_not_held(jail)]
    if jail["repairs"]["count"]:
        lines += ["", repaired(jail["repairs"])]
    if jail["tunnel"]:
        lines += ["", NO_HOOK]
        return "\n".join(lines)
    lines += ["", *blocked_section(jail.get("blocked", []))]
    connections = jail.get("connections", [])
    cut = f", {CONNECTIONS_CUT}" if jail.get("connections_cut") else ""
    lines += ["", f"connections ({len(connections)}{cut})"]
    if connections:
        rows = [("PROTO", "DIR", "PEER", "PORT", "STATE", "SENT", "RECEIVED")]
        rows += [(c["proto"], c["direction"], c["dst"], str(c["dport"]), c["state"],
                  size(c["tx_bytes"]), size(c["rx_bytes"])) for c in connections]
        lines.append(table(rows))
    return "\n".join(lines)


CONNECTIONS_CUT = "cut short: more than inspect reads at once"
NO_HOOK = "no connections or blocked destinations: a tunnel jail's traffic passes no firewall hook of the host"
BLOCKED_LINES = 10
BLOCKED_HEADERS = ("PROTO", "DESTINATION", "REASON", "PACKETS", "BYTES", "FIRST", "LAST")


def blocked_rows(blocked: list[dict]) -> list[tuple[str, ...]]:
    """What the jail's rules refused, one row per destination (most hit first, as the helper sends them)."""
    return [(b["proto"], f"{b['dst']}:{b['dport']}" if b["dport"] else b["dst"], b["reason"], str(b["packets"]),
             size(b["bytes"]), clock(b["first"]), clock(b["last"])) for b in blocked]


def blocked_section(blocked: list[dict]) -> list[str]:
    lines = [f"blocked ({len(blocked)})"]
    if blocked:
        lines.append(table([BLOCKED_HEADERS, *blocked_rows(blocked[:BLOCKED_LINES])]))
    if len(blocked) > BLOCKED_LINES:
        lines.append(f"... and {len(blocked) - BLOCKED_LINES} more (appjail inspect --json lists them)")
    return lines


def clock(epoch: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))
