"""Memory a flood of short connections leaves behind, given back while the flood goes on.

Why: most of a TLS connection's memory is OpenSSL's (tens of KB while it is in its handshake),
which Python's cyclic garbage collector does not see: it counts objects, not bytes. A connection
whose objects end up in a reference cycle - a link that broke mid-write keeps the exception,
whose traceback keeps the frames that held the stream - waits for a full collection, and under
a flood those came thousands of connections apart: the node grew past 100 MiB. The listener's
own objects make no cycle (tests/serve/test_accepting.py checks that), so this is a backstop:
after every `every` TLS connections that ended, a full collection (cheap: the node freezes its
start-up objects), then glibc's `malloc_trim`, which hands freed heap pages back to the OS (a
flood's churn scatters them through the heap; without it RSS stays at its peak long after).
"""

import ctypes
import gc
import time

__all__ = ["Reclaimer", "COLLECT_EVERY"]

COLLECT_EVERY = 128  # TLS connections ended between two full collections


def _find_malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: the collection alone
        return None


_MALLOC_TRIM = _find_malloc_trim()


class Reclaimer:
    def __init__(self, every: int = COLLECT_EVERY):
        self.every = every
        self._ended = 0
        self.counters = {"collections": 0, "collect_cpu_ms": 0.0}

    def ended(self) -> None:
        """A TLS connection was closed."""
        self._ended += 1
        if self._ended >= self.every:
            self._ended = 0
            self.collect()

    def collect(self) -> None:
        t0 = time.thread_time()
        gc.collect()
        if _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)
        self.counters["collections"] += 1
        self.counters["collect_cpu_ms"] = round(
            self.counters["collect_cpu_ms"] + (time.thread_time() - t0) * 1000, 2)
