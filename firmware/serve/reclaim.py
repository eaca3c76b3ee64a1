"""What a closed TLS connection leaves behind, freed when it closes rather than much later.

Why: trio's `SSLStream` is a reference cycle (it keeps a bound method of itself to run its
handshake once), so a closed connection's OpenSSL state - tens of KB, most of it mid-handshake -
is freed only by Python's cyclic garbage collector. That collector counts objects, not bytes,
and under a flood of short connections it ran thousands of connections behind: the node grew
past 100 MiB. `Reclaimer.ended` drops that one reference as a connection ends, so the state is
freed at once. Rarer cycles remain (a broken link's exception keeps the frames that held its
stream): after every `every` ended connections a full collection runs - cheap, because the
node freezes its start-up objects - and then glibc's `malloc_trim` hands the freed pages back to
the OS (a flood's churn scatters them through the heap; without it RSS stays at its peak).
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

    def ended(self, tls_stream) -> None:
        """A server-side `trio.SSLStream` was closed and will not be used again."""
        if getattr(tls_stream, "_handshook", None) is not None:
            tls_stream._handshook = None  # the cycle (see the module's docstring)
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
