"""One line per event, `key=value` fields, journald-friendly.

Under systemd (JOURNAL_STREAM set) lines carry a `<N>` syslog priority prefix and no timestamp:
journald adds its own and maps the prefix to the entry's priority. Elsewhere each line starts
with a UTC timestamp. Not a global: the node creates one `Log` and passes it to its services.

Never pass key material, message data or recipient keys as fields at info level; the callers
log ids shortened (`short_id`) and sizes instead.
"""

import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_SYSLOG_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3}


class Log:
    def __init__(self, level: str = "info", stream=None, journald: bool | None = None,
                 clock=time.time):
        self.threshold = LEVELS[level]
        self.stream = stream if stream is not None else sys.stderr
        self.journald = bool(os.environ.get("JOURNAL_STREAM")) if journald is None else journald
        self._clock = clock

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def event(self, level: str, event: str, **fields) -> None:
        if LEVELS[level] < self.threshold:
            return
        parts = []
        if self.journald:
            parts.append(f"<{_SYSLOG_PRIORITY[level]}>{level}")
        else:
            t = self._clock()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
            parts.append(f"{stamp}.{int(t * 1000) % 1000:03d}Z {level}")
        parts.append(event)
        parts.extend(f"{k}={format_value(v)}" for k, v in fields.items())
        try:
            self.stream.write(" ".join(parts) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must never take the node down

    def debug(self, event: str, **fields) -> None:
        self.event("debug", event, **fields)

    def info(self, event: str, **fields) -> None:
        self.event("info", event, **fields)

    def warning(self, event: str, **fields) -> None:
        self.event("warning", event, **fields)

    def error(self, event: str, **fields) -> None:
        self.event("error", event, **fields)


def format_value(v) -> str:
    if isinstance(v, bytes):
        v = v.hex()
    elif isinstance(v, float):
        v = f"{v:.3f}".rstrip("0").rstrip(".")
    else:
        v = str(v)
    if v == "" or any(c in v for c in ' "=\n\t'):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return v


def short_id(key: bytes) -> str:
    """First 8 hex digits: enough to tell nodes apart in logs, not a full key."""
    return key[:4].hex()
