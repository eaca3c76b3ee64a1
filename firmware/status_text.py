"""`homenode status` as text: the node's `info` map rendered for people (pure functions).

Every subsystem adds its own fields to `info`, so nothing here knows them: the core fields come
first, other scalars sorted after them, nested maps as indented blocks; times (`time`, `*_ms`)
and sizes (`bytes`, `*_bytes`) are made readable.
"""

import time

FIRST = ("node_id", "state", "health", "health_reason", "version", "time", "uptime_s",
         "messages", "bytes", "quota_bytes", "connections")


def status_text(info: dict) -> str:
    """`info` after `jsonable` -> the human summary."""
    keys = [k for k in FIRST if k in info] + sorted(k for k in info if k not in FIRST)
    return "\n".join(_status_lines(info, keys))


def jsonable(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


def _status_lines(d: dict, keys, indent: str = "") -> list[str]:
    """Scalars as aligned `name  value` lines, nested maps as indented blocks after them."""
    scalars = [k for k in keys if not isinstance(d[k], dict)]
    width = max((len(k) for k in scalars), default=0)
    lines = [f"{indent}{k.replace('_', ' '):<{width}}  {_human(k, d[k])}" for k in scalars]
    for k in keys:
        if isinstance(d[k], dict):
            lines.append(f"{indent}{k.replace('_', ' ')}:")
            lines.extend(_status_lines(d[k], sorted(d[k]), indent + "  "))
    return lines


def _human(key: str, v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) or "-"
    if isinstance(v, int) and (key == "time" or key.endswith("_ms")) and v > 10**12:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(v / 1000))
    if isinstance(v, int) and (key == "bytes" or key.endswith("_bytes")) and v >= 1024:
        size, units = v / 1024, ["KiB", "MiB", "GiB", "TiB"]
        while size >= 1024 and len(units) > 1:
            size, units = size / 1024, units[1:]
        return f"{v} ({size:.1f} {units[0]})"
    return str(v) if v != "" else "-"


# -- the short form: health first, what a person reads ---------------------------------------


def human_bytes(n) -> str:
    """Decimal units, as disks and ISPs count: 1.2 GB."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # unreachable


def human_duration(s) -> str:
    if s is None:
        return "-"
    d, rest = divmod(int(s), 86_400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    return f"{m} min {sec} s" if m else f"{sec} s"


def bootstrap_note(info: dict) -> str | None:
    """'no bootstrap configured' words for a box that knows nobody and has no way to, or None."""
    join = info.get("join") or {}
    if (info.get("peers_live") or 0) > 0 or join.get("bootstrap") != "none":
        return None
    if str(info.get("health_reason", "")).startswith("no bootstrap configured"):
        return None  # the health line already says it
    lan = join.get("lan_discovery", "unknown")
    return ("no bootstrap configured: this box knows no other node; add one under [network] "
            "bootstrap in homenode.toml, or put a second box on this home network"
            + ("" if lan == "on" else f" (LAN discovery {lan})"))


def short_status(info: dict) -> str:
    """`info` after `jsonable` -> 10-15 lines: the LED state, its reason and what to do first,
    then the few facts an owner asks about (`--full` prints every counter)."""
    from hal.core import led

    state = info.get("health") or "booting"
    try:
        pat = led.state_pattern(state)
        meaning, action = pat.meaning, pat.action
    except ValueError:
        meaning, action = state, "-"
    dev = info.get("device") or {}
    bw = dev.get("bandwidth") or {}
    st = dev.get("storage") or {}
    nid = str(info.get("node_id", ""))
    lines = [f"homenode {nid[:16]}: {state} - {meaning}"]
    if info.get("health_reason"):
        lines.append(f"  why:   {info['health_reason']}")
    lines.append(f"  to do: {action}")
    if dev.get("led_overlay"):
        lines.append(f"  light: showing {dev['led_overlay']} (button feedback)")
    rows = []
    reach = info.get("reachability")
    if reach is not None:
        advice = info.get("reachability_advice")
        rows.append(("reachable", f"{reach}" + (f": {advice}" if advice else "")))
    if "peers_live" in info:
        rows.append(("peers", f"{info.get('peers_live', 0)} live of "
                              f"{info.get('peers_known', 0)} known"))
    rows.append(("messages", f"{info.get('messages', 0)} held ({human_bytes(info.get('bytes'))} "
                             f"of {human_bytes(info.get('quota_bytes'))} allowed)"))
    if st:
        rows.append(("storage", f"{human_bytes(st.get('free_bytes'))} free; written today "
                                f"{human_bytes(st.get('written_today_bytes'))} of "
                                f"{human_bytes(st.get('write_budget_bytes'))}"))
    if dev:
        temp = dev.get("temp_c")
        rows.append(("temperature", f"{temp} degC ({dev.get('thermal_tier')})" if temp is not None
                     else f"no sane reading (treated as {dev.get('thermal_tier')})"))
    if bw:
        text = f"up {human_bytes(bw.get('up_bytes'))}, down {human_bytes(bw.get('down_bytes'))}"
        if bw.get("cap_bytes"):
            text += (f"; {human_bytes(bw.get('used_bytes'))} of {human_bytes(bw['cap_bytes'])}"
                     " cap")
            rate = bw.get("paced_rate")
            if isinstance(rate, int | float) and rate >= 0:
                text += f", paced to {human_bytes(rate)}/s"
        rows.append(("bandwidth", text))
    rows.append(("up", f"{human_duration(info.get('uptime_s'))}, version "
                       f"{info.get('version', '-')}"))
    update = info.get("update")
    if isinstance(update, dict):
        rows.append(("update", ", ".join(f"{k} {v}" for k, v in sorted(update.items()))))
    web = info.get("web") or {}
    if web.get("address"):
        rows.append(("page", f"http://{web['address']}/"))
    width = max(len(k) for k, _ in rows)
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    note = bootstrap_note(info)
    if note:
        lines.append(note)
    lines.append("(every counter: homenode status --full)")
    return "\n".join(lines)
