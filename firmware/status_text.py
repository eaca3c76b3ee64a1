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
