"""The two clocks the firmware reads, in one place.

`wall_ms` is protocol time (timestamps in requests, records, signatures, expiries): the node and
its clients must agree on it within the protocol's +-60 s window. Services take it as a
`clock_ms` constructor argument so tests can pass a fake. Durations and deadlines use trio's
clock instead (`trio.current_time()`), which tests drive with MockClock.
"""

import time

__all__ = ["wall_ms"]


def wall_ms() -> int:
    """Milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000
