"""Human-readable views of jails for `appjail ls` and `appjail inspect` (pure functions)."""

from __future__ import annotations

import pwd
import time

from .model import wire_defaults

COUNTER_NAMES = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "dropped_packets", "dropped_bytes")


def normalised(jail: dict) -> dict:
    """A jail as `--json` prints it: every documented key present (the bus omits nulls)."""
    result = {**wire_defaults(), "pids": [], "counters": {}, **jail}
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


def address(jail: dict, uid: int) -> str:
    """How user `uid` names the jail to the helper: NAME if it is theirs, else UID/NAME."""
    return jail["name"] if jail["owner_uid"] == uid else f"{jail['owner_uid']}/{jail['name']}"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def jail_list(jails: list[dict]) -> str:
    if not jails:
        return "no jails"
    rows = [("NAME", "OWNER", "ADDRESS", "VPN", "PROCESSES", "KEEP", "OUT", "IN", "DROPPED")]
    for jail in map(normalised, jails):
        counters = jail["counters"]
        rows.append((jail["name"], owner(jail["owner_uid"]), jail["address"], jail["vpn"] or "-",
                     str(len(jail["pids"])), "yes" if jail["keep"] else "no",
                     size(counters["tx_bytes"]), size(counters["rx_bytes"]),
                     str(counters["dropped_packets"])))
    return table(rows)


def kill_switch_blocking(jail: dict) -> bool:
    return bool(jail["vpn"]) and not jail.get("vpn_up", True)


def inspection(jail: dict, previous: dict | None = None, interval: float = 1.0) -> str:
    """The `inspect` page; rates when an earlier sample of the same jail is given."""
    jail = normalised(jail)
    counters = jail["counters"]
    before = normalised(previous)["counters"] if previous else None
    lines = [f"jail {jail['name']}: owner {owner(jail['owner_uid'])}, address {jail['address']}, "
             f"namespace {jail['netns']}"]
    if jail["vpn"]:
        lines.append(f"vpn       {jail['vpn']} ({'up' if jail.get('vpn_up', True) else 'DOWN'})")
    else:
        lines.append("vpn       none (NAT through the host)")
    lines.append(f"dns       {', '.join(jail['dns']) or '-'}")
    if jail["publish"]:
        lines.append(f"published {', '.join(jail['publish'])}")
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
    elif counters["dropped_packets"] and before and counters["dropped_packets"] > before["dropped_packets"]:
        lines += ["", "dropping: the jail is sending traffic its rules refuse"]
    lines += ["", *blocked_section(jail.get("blocked", []))]
    connections = jail.get("connections", [])
    lines += ["", f"connections ({len(connections)})"]
    if connections:
        rows = [("PROTO", "DIR", "PEER", "PORT", "STATE", "SENT", "RECEIVED")]
        rows += [(c["proto"], c["direction"], c["dst"], str(c["dport"]), c["state"],
                  size(c["tx_bytes"]), size(c["rx_bytes"])) for c in connections]
        lines.append(table(rows))
    return "\n".join(lines)


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
