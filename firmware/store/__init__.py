"""Durable message store: SQLite (WAL) with grouped commits, quota and an expiry sweeper.

Why: a home node on an SD card must never lose an acknowledged message when the plug is pulled,
and must not wear the card out. Every acknowledged write is committed with an fsync of the WAL
(`synchronous=FULL`); many writes share one commit, so the fsync and the index-page rewrites
are paid once per batch rather than once per message.

API (trio; times are integer ms since the epoch)::

    store = MessageStore.open(data_dir / DB_FILENAME, quota_bytes=..., clock_ms=wall_ms,
                              batch_rows=64, batch_ms=50, sweep_every_s=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)          # committer + expiry sweeper
        is_new, expiry = await store.put(Message(hash, recipient, ns, ts, expiry, data))
        messages, more = await store.retrieve(recipient, ns, after_hash_or_None,
                                              max_count, max_bytes)
        deleted = await store.delete(recipient, ns, hashes)
        updated = await store.set_expiry(recipient, ns, hashes, expiry, max_ttl_ms=None)
        await store.flush()                     # everything queued so far is committed
        n, freed = await store.evict(n_bytes)   # storage guard: expired, then soonest to expire
        await store.sweep_expired()             # also runs every sweep_every_s
        store.stats()   # count, bytes, pending_bytes, quota_bytes, file_bytes, commits,
                        # ops_committed, bytes_written (writer thread, Linux /proc accounting)
        # replication: store.recipients(), store.hashes_for(recipient),
        #   store.get_many(recipient, ns, hashes)
    store.close()

- `put` returns only after the batch holding it is committed (fsync'd): an acknowledged message
  survives kill -9 and power loss. A duplicate hash returns `(False, stored expiry)`.
- `StoreFull` (wire code `full`) when the quota (sum of stored data bytes) or the disk is full.
- `StoreOpenError` from `open` for a non-SQLite, corrupt, foreign or newer-schema file; the
  message names the file and the fix; the file is never modified.
- `StoreClosed` when writing while `run` is not running.
- Expired messages are invisible to `retrieve` and `hashes_for` at once and deleted by the sweeper
  in batches of `sweep_batch` rows.
- `retrieve` after an unknown hash starts from the oldest message (the client lost its place).
- Messages are keyed by (recipient, ns, hash); the hash covers recipient and ns, so this is the
  same as deduplicating by hash. Replication reads therefore name the mailbox too.
- `close()` only after `run` has returned (it closes the connections the worker threads use).
- Tests: trio's autojump_clock treats a task waiting for a worker thread as idle, so virtual time
  can leap (to the sweeper's next wake-up) during any commit or read; drive time with a manual
  MockClock (`mock_clock.jump`) when it matters, as tests/store does.

Decisions (measured with bench/write_amplification.py: 1 KiB messages, 50k in the store, 20k
more; bytes = /proc/self/io write_bytes incl. checkpoints, per payload byte; medians of 5):
- Rowid table (rows append in insertion order) with ONE random-order index, (recipient, ns, hash).
  Each random-order index costs about one dirtied page per inserted row. Layouts (`--schemas`,
  raw SQLite, 64-row commits, 64 MiB WAL): ours 6.4; UNIQUE(hash) + (recipient, ns) + expiry
  9.9; ours with a plain expiry index 8.2; WITHOUT ROWID keyed by hash 15.0 (1 KiB rows land at
  random and spill to overflow pages). `retrieve` pays for the single index: it sorts the
  mailbox's row ids (index-only, top-N) before reading rows, ~7 ms for a 15k-message mailbox on
  the dev machine under load; negligible for mailboxes of hundreds.
- Expiry index on the expiry minute, `expiry / 60000`: within a minute entries sort by rowid, so
  inserts append. Eviction order is therefore "soonest to expire" at one-minute granularity.
- 1 KiB pages (4 KiB: 10.1) and a 64 MiB WAL: an index page dirtied in the WAL costs 1 KiB, and a
  checkpoint writes each dirty page once however often it changed, so fewer checkpoints save.
  The store: 6.5 bytes per payload byte; 8.7 with 200k messages already stored (the ratio grows
  with the store, as more distinct index pages change between checkpoints); the same store with
  one fsync'd commit per message: 15.9. Cost: up to 128 MiB of WAL on disk, replayed after a crash.
"""

from .errors import StoreClosed, StoreError, StoreFull, StoreOpenError
from .ops import Message
from .schema import SCHEMA_VERSION
from .store import MessageStore

DB_FILENAME = "messages.sqlite3"

__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "Message",
    "MessageStore",
    "StoreClosed",
    "StoreError",
    "StoreFull",
    "StoreOpenError",
]
