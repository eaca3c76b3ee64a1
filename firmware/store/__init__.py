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

Decisions (measured with bench/write_amplification.py: 1 KiB messages, 50k in the store, 20k
more put by 256 tasks; bytes from /proc/self/io write_bytes incl. checkpoints and the final one):
- Rowid table (rows append in insertion order) with ONE random-order index, (recipient, ns, hash).
  Each random index costs about a dirtied page per inserted row; a separate UNIQUE(hash) index
  plus a (recipient, ns) index measured 14 vs 10 bytes/byte. WITHOUT ROWID keyed by hash measured
  36: 1 KiB rows land at random and spill to overflow pages. `retrieve` pays for this by sorting
  the mailbox's row ids (index-only, integers) before reading the rows it returns.
- Expiry index on the expiry minute, `expiry / 60000`: within a minute entries sort by rowid, so
  inserts append (a plain expiry index cost about 1 byte/byte more). Eviction order is therefore
  "soonest to expire" at one-minute granularity.
- 1 KiB pages and a 64 MiB WAL: an index page dirtied in the WAL costs 1 KiB instead of 4, and a
  checkpoint (which writes each dirty page once, however often it changed) comes 4x less often.
  Result: 6.5 bytes written per payload byte (4 KiB pages: 10.1; 16 MiB WAL: 8.6); the same store
  with one fsync'd commit per message: 15.9. Cost: up to 128 MiB of WAL on disk, read back after
  a crash.
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
