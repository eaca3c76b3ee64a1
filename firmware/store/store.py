"""MessageStore: the trio face of the SQLite file.

Writes go through one GroupCommitter (committer.py: adaptive grouped durable commits on the
single writer connection); reads use a second connection (WAL readers never block the writer),
in a worker thread, one at a time. The trio event loop itself never waits on SQLite. The store
keeps running totals (messages, data bytes, tombstones) so nothing on a hot path stats files or
counts rows.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio

from firmware import fsaccess
from firmware.durable import fsync_dir

from . import ops, schema
from .committer import GroupCommitter
from .errors import StoreError, StoreFull
from .ops import Change, Message, PutResult, Tombstone
from .reserve import RESERVE_BYTES, SpaceReserve


class MessageStore:
    """Durable, deduplicated message storage. See the package docstring for the API."""

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        *,
        quota_bytes: int,
        batch_rows: int,
        batch_ms: float,
        clock_ms: Callable[[], int],
        sweep_every_s: float,
        sweep_batch: int,
        max_tombstones: int,
        reserve: SpaceReserve,
        sweep_paused: Callable[[], bool] = lambda: False,
    ):
        self.path = path
        self._writer = writer
        self._reader = reader
        self.quota_bytes = quota_bytes
        self._clock_ms = clock_ms
        self._sweep_every_s = sweep_every_s
        self._sweep_batch = sweep_batch
        self._sweep_paused = sweep_paused  # e.g. a warm box: skip the round
        self.sweeps_skipped = 0
        self.max_tombstones = max_tombstones
        self.reserve = reserve
        self._count, self._bytes, self._tombstones = ops.read_totals(writer)
        self._committer = GroupCommitter(writer, path, batch_rows=batch_rows, batch_ms=batch_ms,
                                         account=self._account)
        self._read_limiter = trio.CapacityLimiter(1)

    def _account(self, change: Change) -> None:
        self._count += change.count
        self._bytes += change.bytes
        self._tombstones += change.tombstones

    # ---------------------------------------------------------------- opening and closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        quota_bytes: int,
        clock_ms: Callable[[], int],
        batch_rows: int = 64,
        batch_ms: float = 0,
        sweep_every_s: float = 30,
        sweep_batch: int = 256,
        wal_bytes: int = 64 << 20,
        max_tombstones: int = 200_000,
        reserve_bytes: int = RESERVE_BYTES,
        sweep_paused: Callable[[], bool] = lambda: False,
    ) -> MessageStore:
        """Open (creating or migrating) the database file. Blocks briefly; call at startup.

        Never refuses for a full disk alone: if the disk has less room than the space reserve
        (`<file>.reserve`), the reserve is given back first so SQLite can open the file.
        """
        path = Path(path)
        if batch_rows < 1 or batch_ms < 0 or quota_bytes < 0 or max_tombstones < 0:
            raise ValueError(
                "batch_rows must be >= 1, batch_ms, quota_bytes and max_tombstones >= 0")
        reserve = SpaceReserve(f"{path}.reserve", reserve_bytes)
        free = fsaccess.free_bytes(str(path.parent))
        if free is not None and free < reserve.size:
            reserve.release()
        schema.check_file_header(path)
        existed = path.exists()
        if existed:  # SQLite would quietly open an unwritable file read-only
            why = fsaccess.file_problem(str(path))
            if why:
                raise schema.access_error(path, PermissionError(why))
        try:
            writer = schema.connect(path)
        except sqlite3.Error as e:
            raise schema.access_error(path, e) from e
        reader = None
        try:
            version = schema.check_database(writer, path)
            try:
                schema.configure(writer, wal_bytes=wal_bytes)
            except sqlite3.OperationalError as e:
                raise schema.access_error(path, e) from e
            schema.migrate(writer, version, path)
            if not existed:
                fsync_dir(str(path.parent))  # the new database file itself is durable
            reader = schema.connect(path)
            schema.configure(reader, wal_bytes=wal_bytes, query_only=True)
            reserve.restore(fsaccess.free_bytes(str(path.parent)), headroom=reserve.size)
            return cls(
                path, writer, reader, quota_bytes=quota_bytes, batch_rows=batch_rows,
                batch_ms=batch_ms, clock_ms=clock_ms, sweep_every_s=sweep_every_s,
                sweep_batch=sweep_batch, max_tombstones=max_tombstones, reserve=reserve,
                sweep_paused=sweep_paused,
            )
        except BaseException:
            writer.close()
            if reader is not None:
                reader.close()
            raise

    def close(self) -> None:
        """Close both connections (the last close checkpoints the WAL into the main file)."""
        self._reader.close()
        self._writer.close()

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- the service

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Committer plus expiry sweeper; start with `nursery.start(store.run)`."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._committer.run)
            nursery.start_soon(self._sweeper)
            task_status.started()

    async def _submit(self, fn, reserved: int = 0, msg: Message | None = None):
        return await self._committer.submit(fn, msg=msg, reserved=reserved)

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(self._sweep_every_s)
            if self._sweep_paused():
                self.sweeps_skipped += 1
                continue
            try:
                await self.sweep_expired()
                await trio.to_thread.run_sync(self._restore_reserve)
            except StoreError:
                pass  # a full or failing disk: write_problem says so; retried next round

    def _restore_reserve(self) -> bool:
        free = fsaccess.free_bytes(str(self.path.parent))
        return self.reserve.restore(free, headroom=self.reserve.size)

    # ---------------------------------------------------------------- writes

    async def put(self, msg: Message) -> PutResult:
        """Store `msg`; returns `(is_new, expiry)` (a PutResult) once committed durably.

        A duplicate hash is not an error: it returns `(False, stored expiry)`. A hash deleted
        from this mailbox (it has a tombstone) is "handled, not stored": `(False, msg.expiry)`
        with `.deleted` True -- a deleted message never comes back through anti-entropy,
        hand-off or a client storing the very same message again (same hash, so same ts: a
        client that wants to send it again sends a new message). Raises StoreFull when the
        message would take the stored data past `quota_bytes`.
        """
        _check_message(msg)
        size = len(msg.data)
        if self.used_bytes + size > self.quota_bytes:
            if await self.is_deleted([msg.hash]):
                return PutResult(False, msg.expiry, deleted=True)
            existing = await self.get_many(msg.recipient, msg.ns, [msg.hash])
            if existing:
                return PutResult(False, existing[0].expiry)
            raise StoreFull(
                f"message store quota reached: {self._bytes} of {self.quota_bytes} bytes used "
                f"(+{self._committer.pending_bytes} pending); a {size}-byte message does not fit"
            )
        return await self._submit(None, reserved=size, msg=msg)

    async def delete(
        self, recipient: bytes, ns: int, hashes: list[bytes], *, proof: bytes | None = None
    ) -> list[bytes]:
        """The recipient's delete: remove those of `hashes` stored for (recipient, ns) and leave
        a durable tombstone for every one named (stored here or not), in the same transaction.
        Returns the ones that were stored. `proof` (opaque, e.g. the signed request) is kept
        with the tombstones for the replication layer."""
        _check_proof(proof)
        now = self._clock_ms()
        return await self._submit(
            partial(ops.delete, recipient=recipient, ns=ns, hashes=list(hashes), now=now,
                    tombstone=True, proof=proof))

    async def drop_copies(self, recipient: bytes, ns: int, hashes: list[bytes]) -> list[bytes]:
        """Remove this node's copies without a tombstone (hand-off: the message lives on at its
        new owners and may come back here later). Returns the ones removed."""
        now = self._clock_ms()
        return await self._submit(
            partial(ops.delete, recipient=recipient, ns=ns, hashes=list(hashes), now=now,
                    tombstone=False))

    async def set_expiry(
        self, recipient: bytes, ns: int, hashes: list[bytes], expiry: int,
        *, max_ttl_ms: int | None = None,
    ) -> list[bytes]:
        """Set a new absolute expiry on unexpired messages of (recipient, ns); returns the ones
        updated. With `max_ttl_ms`, a message is only updated if `expiry <= its ts + max_ttl_ms`."""
        now = self._clock_ms()
        return await self._submit(
            lambda conn: ops.set_expiry(conn, recipient, ns, hashes, expiry, now, max_ttl_ms)
        )

    async def sweep_expired(self) -> int:
        """Delete every message expired now, `sweep_batch` rows per transaction; then drop
        expired tombstones (and the soonest-expiring beyond `max_tombstones`). Returns the
        number of messages deleted."""
        total = 0
        while True:
            now = self._clock_ms()
            n, _ = await self._submit(
                partial(
                    ops.delete_by_expiry, now=now, expired_only=True, limit=self._sweep_batch,
                    want_bytes=None,
                )
            )
            total += n
            if n < self._sweep_batch:
                break
        while self._tombstones:
            over = self._tombstones - self.max_tombstones
            dropped = await self._submit(partial(
                ops.sweep_tombstones, now=self._clock_ms(), limit=self._sweep_batch, over=over))
            if dropped < self._sweep_batch:
                break
        return total

    async def evict(self, n_bytes: int) -> tuple[int, int]:
        """Free at least `n_bytes` of message data if there is that much: expired messages first,
        then those soonest to expire (by expiry minute). Returns `(messages, bytes)` removed.

        On a disk too full even to record the deletes, the space reserve is given back and the
        eviction tried once more; StoreFull if it still cannot write."""
        try:
            return await self._evict(n_bytes)
        except StoreFull:
            if not await trio.to_thread.run_sync(self.reserve.release):
                raise
            return await self._evict(n_bytes)

    async def _evict(self, n_bytes: int) -> tuple[int, int]:
        count = freed = 0
        for expired_only in (True, False):
            while freed < n_bytes:
                n, b = await self._submit(
                    partial(
                        ops.delete_by_expiry, now=self._clock_ms(), expired_only=expired_only,
                        limit=self._sweep_batch, want_bytes=n_bytes - freed,
                    )
                )
                count, freed = count + n, freed + b
                if n == 0:
                    break
        return count, freed

    async def release_wal_space(self) -> bool:
        """Copy the WAL into the database and truncate it, giving its disk space back (it grows
        to `wal_bytes` between checkpoints). For a full disk; True if it worked. Never raises
        for a disk or SQLite error: it is a best effort."""
        def truncate(conn) -> bool:
            try:
                return conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            except sqlite3.Error:
                return False

        return await self._committer.exclusive(truncate)

    async def flush(self) -> None:
        """Return once everything queued before this call is committed."""
        await self._submit(lambda conn: Change(None))

    # ---------------------------------------------------------------- reads

    async def _read(self, fn):
        try:
            return await trio.to_thread.run_sync(fn, self._reader, limiter=self._read_limiter)
        except sqlite3.Error as e:
            raise schema.store_error(e, self.path) from e

    async def retrieve(
        self, recipient: bytes, ns: int, after: bytes | None, max_count: int, max_bytes: int
    ) -> tuple[list[Message], bool]:
        """Unexpired messages of (recipient, ns) stored after `after` (from the start when None
        or unknown), in this store's insertion order: at most `max_count` and `max_bytes` of
        data, but at least one if any. Returns `(messages, more)`. A page costs the same in a
        mailbox of any size."""
        now = self._clock_ms()
        return await self._read(
            lambda c: ops.retrieve(c, recipient, ns, after, max_count, max_bytes, now)
        )

    async def get_many(self, recipient: bytes, ns: int, hashes: list[bytes]) -> list[Message]:
        """The stored messages of (recipient, ns) among `hashes` (expired or not), in the order
        asked, with their proofs, for replication."""
        return await self._read(lambda c: ops.get_many(c, recipient, ns, hashes))

    async def get_by_hash(self, hashes: list[bytes]) -> list[Message]:
        """The stored messages among `hashes`, whatever their mailbox (expired or not), in the
        order asked, with their proofs: anti-entropy's fetch_missing and hand-off."""
        return await self._read(lambda c: ops.get_by_hash(c, hashes))

    async def hashes_for(self, recipient: bytes) -> list[tuple[int, bytes, int]]:
        """`(ns, hash, expiry)` of every unexpired message of `recipient`, for anti-entropy."""
        now = self._clock_ms()
        return await self._read(lambda c: ops.hashes_for(c, recipient, now))

    async def recipients(self) -> list[bytes]:
        """Every recipient with stored messages, for hand-off on membership change."""
        return await self._read(ops.recipients)

    async def is_deleted(self, hashes: list[bytes]) -> set[bytes]:
        """Those of `hashes` with an unexpired tombstone: deleted by their recipient, so never
        to be fetched or stored again (a put of one answers "handled, not stored")."""
        now = self._clock_ms()
        return await self._read(lambda c: ops.is_deleted(c, hashes, now))

    async def tombstones(self, recipient: bytes) -> list[Tombstone]:
        """Unexpired tombstones of `recipient`'s mailboxes, for exchanging deletes between
        swarm members."""
        now = self._clock_ms()
        return await self._read(lambda c: ops.tombstones_for(c, recipient, now))

    async def tombstones_of(self, hashes: list[bytes]) -> list[Tombstone]:
        """The unexpired tombstones among `hashes`, whatever their mailbox: which deletes to
        show a swarm member that still holds a deleted message."""
        now = self._clock_ms()
        return await self._read(lambda c: ops.tombstones_by_hash(c, hashes, now))

    # ---------------------------------------------------------------- running totals

    def totals(self) -> dict:
        """Messages and bytes held, and bytes reserved by stores still queued: running totals
        kept by the committer, so reading them costs nothing."""
        return {"count": self._count, "bytes": self._bytes,
                "pending_bytes": self._committer.pending_bytes, "tombstones": self._tombstones}

    @property
    def used_bytes(self) -> int:
        """Data bytes stored plus those of puts in flight (no I/O: the running totals)."""
        return self._bytes + self._committer.pending_bytes

    @property
    def reusable_bytes(self) -> int:
        """Free pages inside the file (as of the last commit): room that needs no new disk."""
        return self._committer.reusable_bytes

    @property
    def write_problem(self) -> str | None:
        """Why the last commit failed (a full, read-only or failing disk), until one succeeds."""
        return self._committer.write_problem

    @property
    def commits(self) -> int:
        return self._committer.commits

    @property
    def bytes_written(self) -> int:
        """Bytes the writer thread dirtied (WAL and checkpoints; Linux /proc accounting)."""
        return self._committer.bytes_written

    def stats(self) -> dict:
        """Counters for the status API (three stat calls for the file sizes)."""
        file_bytes = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                file_bytes += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        c = self._committer
        return {
            "count": self._count,
            "bytes": self._bytes,
            "pending_bytes": c.pending_bytes,
            "quota_bytes": self.quota_bytes,
            "file_bytes": file_bytes,
            "reusable_bytes": c.reusable_bytes,
            "tombstones": self._tombstones,
            "batches": c.batches,
            "commits": c.commits,
            "ops_committed": c.ops_committed,
            "bytes_written": c.bytes_written,
            "write_problem": c.write_problem,
        }


def _check_proof(proof) -> None:
    if proof is not None and (not isinstance(proof, bytes) or len(proof) > ops.MAX_PROOF_BYTES):
        raise ValueError(f"proof must be None or at most {ops.MAX_PROOF_BYTES} bytes")


def _check_message(msg: Message) -> None:
    for name in ("hash", "recipient"):
        v = getattr(msg, name)
        if not isinstance(v, bytes) or len(v) != 32:
            raise ValueError(f"Message.{name} must be 32 bytes, got {type(v).__name__} {v!r:.80}")
    for name in ("ns", "ts", "expiry"):
        if type(getattr(msg, name)) is not int:
            raise ValueError(f"Message.{name} must be an int, got {getattr(msg, name)!r:.80}")
    if not isinstance(msg.data, bytes):
        raise ValueError(f"Message.data must be bytes, got {type(msg.data).__name__}")
    _check_proof(msg.proof)
