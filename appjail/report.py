"""Human-readable views of jails for `appjail ls` and `appjail inspect` (pure functions)."""

from __future__ import annotations

from .model import wire_defaults

COUNTER_NAMES = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "dropped_packets", "dropped_bytes")


def normalised(jail: dict) -> dict:
    """A jail as `--json` prints it: every documented key present (the bus omits nulls)."""
    result = {**wire_defaults(), "pids": [], "counters": {}, **jail}
    result["counters"] = {name: result["counters"].get(name, 0) for name in COUNTER_NAMES}
    return result


def size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def jail_list(jails: list[dict]) -> str:
    if not jails:
        return "no jails"
    rows = [("NAME", "OWNER", "ADDRESS", "VPN", "PROCESSES", "KEEP", "OUT", "IN", "DROPPED")]
    for jail in map(normalised, jails):
        counters = jail["counters"]
        rows.append((jail["name"], str(jail["owner_uid"]), jail["address"], jail["vpn"] or "-",
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
    lines = [f"jail {jail['name']}: uid {jail['owner_uid']}, address {jail['address']}, "
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
    lines.append(f"processes {', '.join(map(str, jail['pids'])) or 'none'}")
    rows = [("", "PACKETS", "BYTES", "RATE")]
    for label, prefix in (("out", "tx"), ("in", "rx"), ("dropped", "dropped")):
        rate = "-"
        if before is not None:
            rate = size((counters[f"{prefix}_bytes"] - before[f"{prefix}_bytes"]) / interval) + "/s"
        rows.append((label, str(counters[f"{prefix}_packets"]), size(counters[f"{prefix}_bytes"]), rate))
    lines += ["", table(rows)]
    if kill_switch_blocking(jail):
        lines += ["", f"KILL SWITCH: {jail['vpn']} is down or missing; the jail's traffic is blocked "
                      f"({counters['dropped_packets']} packets dropped so far), nothing leaks around it"]
    elif counters["dropped_packets"] and before and counters["dropped_packets"] > before["dropped_packets"]:
        lines += ["", "dropping: the jail is sending traffic its rules refuse"]
    connections = jail.get("connections", [])
    lines += ["", f"connections ({len(connections)})"]
    if connections:
        rows = [("PROTO", "DIR", "PEER", "PORT", "STATE", "SENT", "RECEIVED")]
        rows += [(c["proto"], c["direction"], c["dst"], str(c["dport"]), c["state"],
                  size(c["tx_bytes"]), size(c["rx_bytes"])) for c in connections]
        lines.append(table(rows))
    return "\n".join(lines)
