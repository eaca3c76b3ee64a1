"""Chart history, pure: samples in, bounded per-tier series out, and a compact byte form.

Why tiers of buckets: the page charts the last 24 hours and the last 30 days; each raw sample
(one a minute) is folded into the current bucket of every tier (2-minute buckets for the day,
1-hour buckets for the month: downsampling as it goes), and a tier keeps its last 720 finished
buckets. So the whole history is ~35 KB whatever the uptime, far under its 2 MiB cap, and
writing it costs the SD card one small file now and then (the recorder decides when).

Series: gauges (temperature, messages held, live peers) keep the mean of their samples;
`up_bytes` / `down_bytes` are traffic per bucket, from the deltas of the node's counters.
"""

import math
import struct
import zlib
from collections import deque

SERIES = ("temp_c", "up_bytes", "down_bytes", "messages", "peers_live")
SUMMED = frozenset({"up_bytes", "down_bytes"})
MAX_FILE_BYTES = 2 * 1024 * 1024
MAGIC = b"HNHIST1\n"


class Tier:
    """Finished buckets of `step_s` seconds, at most `slots` of them, plus the open one."""

    def __init__(self, name: str, step_s: int, slots: int):
        self.name = name
        self.step_s = step_s
        self.slots = slots
        self.buckets: deque = deque(maxlen=slots)  # (slot number, (value or nan, ...))
        self._open = None  # (slot, [sum...], [count...])

    def add(self, t_s: float, values: dict) -> None:
        slot = int(t_s // self.step_s)
        if self._open is not None and slot != self._open[0]:
            self._close()
        if self.buckets and slot <= self.buckets[-1][0]:
            return  # the clock went back behind a finished bucket: ignore until it catches up
        if self._open is None:
            self._open = (slot, [0.0] * len(SERIES), [0] * len(SERIES))
        _, sums, counts = self._open
        for i, name in enumerate(SERIES):
            v = values.get(name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            sums[i] += v
            counts[i] += 1

    def _close(self):
        slot, sums, counts = self._open
        self._open = None
        vals = tuple(
            (s if name in SUMMED else s / c) if c else math.nan
            for name, s, c in zip(SERIES, sums, counts, strict=True))
        self.buckets.append((slot, vals))

    def points(self, series: str, include_open: bool = True) -> list[tuple[int, float]]:
        """[(bucket start in unix seconds, value)] oldest first; missing values left out."""
        i = SERIES.index(series)
        out = [(slot * self.step_s, vals[i]) for slot, vals in self.buckets
               if not math.isnan(vals[i])]
        if include_open and self._open is not None and self._open[2][i]:
            slot, sums, counts = self._open
            v = sums[i] if series in SUMMED else sums[i] / counts[i]
            out.append((slot * self.step_s, v))
        return out


class History:
    """The day and month tiers, fed together."""

    def __init__(self, tiers=None):
        self.tiers = tiers or [Tier("day", 120, 720), Tier("month", 3600, 720)]

    def tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    def add(self, t_s: float, values: dict) -> None:
        for t in self.tiers:
            t.add(t_s, values)

    # -- byte form: magic, crc32, then per tier (step, slots, count, count x (slot, 5 floats))

    def to_bytes(self) -> bytes:
        parts = [struct.pack("<H", len(self.tiers))]
        row = struct.Struct("<I" + "f" * len(SERIES))
        for t in self.tiers:
            name = t.name.encode()
            parts.append(struct.pack("<B", len(name)) + name)
            parts.append(struct.pack("<III", t.step_s, t.slots, len(t.buckets)))
            parts.extend(row.pack(slot, *vals) for slot, vals in t.buckets)
        payload = b"".join(parts)
        data = MAGIC + struct.pack("<I", zlib.crc32(payload)) + payload
        if len(data) > MAX_FILE_BYTES:  # impossible with the built-in tiers; a guard for edits
            raise ValueError(f"history is {len(data)} bytes, over its {MAX_FILE_BYTES} cap")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> "History":
        """Raise ValueError saying what is wrong with a file that is not a history."""
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"{len(data)} bytes, over the {MAX_FILE_BYTES} cap")
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 6:
            raise ValueError("not a homenode history file")
        (crc,) = struct.unpack_from("<I", data, len(MAGIC))
        payload = data[len(MAGIC) + 4:]
        if zlib.crc32(payload) != crc:
            raise ValueError("checksum mismatch (cut short or damaged)")
        row = struct.Struct("<I" + "f" * len(SERIES))
        try:
            (ntiers,) = struct.unpack_from("<H", payload, 0)
            pos, tiers = 2, []
            for _ in range(ntiers):
                (nlen,) = struct.unpack_from("<B", payload, pos)
                name = payload[pos + 1:pos + 1 + nlen].decode()
                pos += 1 + nlen
                step, slots, count = struct.unpack_from("<III", payload, pos)
                pos += 12
                if not 0 < step <= 86_400 * 31 or not 0 < slots <= 100_000 or count > slots:
                    raise ValueError(f"implausible tier {name!r}")
                tier = Tier(name, step, slots)
                for _ in range(count):
                    slot, *vals = row.unpack_from(payload, pos)
                    pos += row.size
                    tier.buckets.append((slot, tuple(vals)))
                tiers.append(tier)
        except (struct.error, UnicodeDecodeError) as e:
            raise ValueError(f"malformed ({e})") from None
        return cls(tiers)

    def merge_layout(self, fresh: "History") -> "History":
        """Keep loaded tiers whose (name, step) the code still uses; new tiers start empty."""
        old = {(t.name, t.step_s): t for t in self.tiers}
        out = []
        for t in fresh.tiers:
            kept = old.get((t.name, t.step_s))
            if kept is not None:
                t.buckets.extend(list(kept.buckets)[-t.slots:])
            out.append(t)
        return History(out)

    def as_json(self) -> dict:
        """For the diagnostics bundle: every tier's points per series."""
        return {t.name: {"step_s": t.step_s,
                         "series": {s: t.points(s) for s in SERIES}} for t in self.tiers}


class CounterDeltas:
    """Cumulative counters -> per-sample deltas (a counter that went down was reset: the new
    value is the delta; the first sample gives none)."""

    def __init__(self):
        self.last: dict = {}

    def delta(self, name: str, value) -> float | None:
        if value is None:
            self.last.pop(name, None)
            return None
        prev = self.last.get(name)
        self.last[name] = value
        if prev is None:
            return None
        return value - prev if value >= prev else value


def sample_from_info(info: dict, deltas: CounterDeltas) -> dict:
    """The node's `info` map -> one history sample."""
    dev = info.get("device") or {}
    bw = dev.get("bandwidth") or {}
    return {"temp_c": dev.get("temp_c"),
            "up_bytes": deltas.delta("up", bw.get("up_bytes")),
            "down_bytes": deltas.delta("down", bw.get("down_bytes")),
            "messages": info.get("messages"),
            "peers_live": info.get("peers_live")}
