"""Fixtures for the store tests: real SQLite files in tmp_path, time from trio's clock."""

import hashlib
import time

import pytest
import trio

from firmware.store import Message, MessageStore

BASE_MS = 1_700_000_000_000  # wall-clock ms at trio time 0
DAY_MS = 86_400_000


@pytest.fixture
async def now_ms():
    """The store's clock in tests: BASE_MS at the start of the test, then follows trio's clock
    (a MockClock when the test asks for one)."""
    t0 = trio.current_time()
    return lambda: BASE_MS + int((trio.current_time() - t0) * 1000)


def make_msg(i: int, *, recipient: bytes = b"R" * 32, ns: int = 0, size: int = 100,
             ts: int = BASE_MS, expiry: int = BASE_MS + DAY_MS) -> Message:
    data = hashlib.blake2b(f"{i}".encode(), digest_size=64).digest() * (size // 64 + 1)
    data = data[:size]
    h = hashlib.blake2b(recipient + ns.to_bytes(2, "big", signed=True) + ts.to_bytes(8, "big")
                        + data, digest_size=32).digest()
    return Message(h, recipient, ns, ts, expiry, data)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "messages.sqlite3"


@pytest.fixture
def open_store(db_path, now_ms):
    """`open_store(**kw)` opens a MessageStore on db_path; all are closed at teardown."""
    opened = []

    def _open(**kw):
        kw.setdefault("quota_bytes", 100_000_000)
        kw.setdefault("clock_ms", now_ms)
        store = MessageStore.open(kw.pop("path", db_path), **kw)
        opened.append(store)
        return store

    yield _open
    for s in opened:
        s.close()


@pytest.fixture
async def running(open_store, nursery):
    """`await running(**kw)`: an opened store with its service started in the test's nursery."""

    async def _start(**kw):
        store = open_store(**kw)
        await nursery.start(store.run)
        return store

    return _start


async def until(cond, timeout_s: float = 10.0) -> None:
    """Let tasks and worker threads run until `cond()` holds (real-time bound, so a bug fails
    instead of hanging). With a MockClock, virtual time does not move meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await trio.sleep(0)
