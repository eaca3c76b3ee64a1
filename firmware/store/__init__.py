"""Durable message store: SQLite (WAL) with adaptive grouped commits, quota, durable
tombstones and an expiry sweeper.

Why: a home node on an SD card must never lose an acknowledged message when the plug is pulled,
and must not wear the card out. Every acknowledged write is committed with an fsync of the WAL
(`synchronous=FULL`). A lone write is committed at once (ack in ~1-3 ms on the dev machine);
writes that arrive while a commit is in progress share the next one, so under load the fsync
and the index-page rewrites are paid once per batch rather than once per message.

API (trio; times are integer ms since the epoch)::

    store = MessageStore.open(data_dir / DB_FILENAME, quota_bytes=..., clock_ms=wall_ms,
                              batch_rows=64, batch_ms=0, sweep_every_s=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)          # committer + expiry sweeper
        r = await store.put(Message(hash, recipient, ns, ts, expiry, data, proof=None))
        is_new, expiry = r                      # a PutResult; r.deleted: tombstoned, not stored
        messages, more = await store.retrieve(recipient, ns, after_hash_or_None,
                                              max_count, max_bytes)
        deleted = await store.delete(recipient, ns, hashes, proof=None)  # + tombstones
        updated = await store.set_expiry(recipient, ns, hashes, expiry, max_ttl_ms=None)
        await store.flush()                     # everything queued so far is committed
        n, freed = await store.evict(n_bytes)   # storage guard: expired, then soonest to expire
        await store.sweep_expired()             # also runs every sweep_every_s
        store.used_bytes, store.reusable_bytes, store.write_problem   # no I/O: running totals
        store.stats()   # count, bytes, pending_bytes, quota_bytes, file_bytes, reusable_bytes,
                        # tombstones, commits, ops_committed, bytes_written, write_problem
        # replication: store.recipients(), store.hashes_for(recipient),
        #   store.get_many(recipient, ns, hashes), store.get_by_hash(hashes),
        #   store.is_deleted(hashes) -> set, store.tombstones(recipient) -> [Tombstone],
        #   store.tombstones_of(hashes) -> [Tombstone],
        #   store.drop_copies(recipient, ns, hashes)   # hand-off: no tombstone
        #   await store.release_wal_space()            # full disk: give the WAL's space back
    store.close()

- `put` returns only after the commit holding it is durable (fsync'd): an acknowledged message
  survives kill -9 and power loss. A duplicate hash returns `(False, stored expiry)`.
- Deletes are durable. `delete` leaves a tombstone for every hash it names (stored here or not:
  the delete may arrive before the message), in the same transaction, kept until any copy could
  have expired (ts + the namespace's max ttl; unknown: now + 60 s + max ttl) and then swept.
  A `put` of a tombstoned hash of the same mailbox is "handled, not stored" (`PutResult.deleted`)
  -- whether it comes from anti-entropy, hand-off or a client storing the very same message
  again (same hash means same ts: to send it again, send a new message). A tombstone claimed
  for a hash not stored here never blocks another mailbox's message. At most `max_tombstones`
  (200,000, some 25 MB) are kept; beyond that the soonest-expiring go first.
- `Message.proof` is opaque: the owner's signature material for private namespaces (None for
  namespace 0), stored and returned with the message by every read; the first copy's wins.
- `StoreFull` (wire code `full`) when the quota (sum of stored data bytes) or the disk is full.
- `StoreOpenError` from `open` for a non-SQLite, corrupt, foreign or newer-schema file, and for
  a file or directory it cannot use: permission, read-only mount, missing directory or full disk
  are named as such (firmware/fsaccess.py), never as corruption; the file is never modified.
- A full disk never stops `open`: `<file>.reserve` (4 MiB, preallocated) is given back when the
  disk has less room than that, so SQLite can create its -shm/-wal files; `evict` gives it back
  too when even the deletes cannot be written; the sweeper makes it again once there is room.
- `StoreClosed` when writing while `run` is not running.
- Expired messages are invisible to `retrieve` and `hashes_for` at once and deleted by the sweeper
  in batches of `sweep_batch` rows.
- `retrieve` is in this store's insertion order; after an unknown hash it starts from the
  oldest message (the client lost its place).
- Messages are keyed by hash (which covers recipient and ns); reads by mailbox check it too.
- `close()` only after `run` has returned (it closes the connections the worker threads use).
- Tests: trio's autojump_clock treats a task waiting for a worker thread as idle, so virtual time
  can leap (to the sweeper's next wake-up) during any commit or read; drive time with a manual
  MockClock (`mock_clock.jump`) when it matters, as tests/store does.

Decisions (bench/write_amplification.py: 1 KiB messages, 50k in the store, 20k more; bytes =
/proc/self/io write_bytes incl. checkpoints, per payload byte):
- Rowid table (rows append in insertion order) with two random-order indexes, each paying for
  itself: UNIQUE(hash) (dedupe, lookups by hash) and (recipient, ns), whose entries end in the
  rowid, so a mailbox is listed in insertion order and a `retrieve` page costs the same at 100k
  messages as at 1k (bench/store_retrieve.py). Each random-order index costs about one dirtied
  page per inserted row: raw SQLite layouts (`--schemas`, 64-row commits, 64 MiB WAL) measured
  v1's single (recipient, ns, hash) index 6.4 and this one 8.5 (512-byte pages: 7.65, not taken:
  existing files keep their page size, and reads get deeper trees). v1 sorted the mailbox's row
  ids for every page: 17 ms at 100k against 0.6 ms at 1k.
- Expiry index on the expiry minute, `expiry / 60000`: within a minute entries sort by rowid, so
  inserts append. Eviction order is therefore "soonest to expire" at one-minute granularity.
- 1 KiB pages (4 KiB: 10.1) and a 64 MiB WAL: an index page dirtied in the WAL costs 1 KiB, and a
  checkpoint writes each dirty page once however often it changed, so fewer checkpoints save.
  Cost: up to 128 MiB of WAL on disk, replayed after a crash.
- Adaptive commits: under a light steady load each write is its own commit (a few pages of WAL
  per message: the write amplification of `batch_rows=1`); under load batches form by themselves
  and the figure is the grouped one. `batch_ms > 0` restores a fixed window for a card whose
  write budget matters more than latency.
"""

from .errors import StoreClosed, StoreError, StoreFull, StoreOpenError
from .ops import Message, PutResult, Tombstone
from .reserve import RESERVE_BYTES
from .schema import SCHEMA_VERSION
from .store import MessageStore

DB_FILENAME = "messages.sqlite3"

__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "Message",
    "MessageStore",
    "PutResult",
    "RESERVE_BYTES",
    "Tombstone",
    "StoreClosed",
    "StoreError",
    "StoreFull",
    "StoreOpenError",
]
