"""MessageStore: the trio face of the SQLite file, with grouped durable commits.

All writes go through one committer task. It takes a batch of queued operations (closing it after
`batch_rows` operations or `batch_ms` after the oldest one arrived), applies them in one
transaction on the single writer connection in a worker thread, commits (one WAL fsync), and only
then wakes the callers. Reads use a second connection (WAL readers never block the writer), also
in a worker thread, one at a time. The trio event loop itself never waits on SQLite.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from . import ops, schema
from .errors import StoreClosed, StoreError, StoreFull
from .ops import Message

SQLITE_FULL = 13
# errors caused by one operation's values rather than by the database or the disk
_OP_ERRORS = (
    sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
    OverflowError, TypeError, ValueError,
)


@dataclass(eq=False, slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], ops.WriteResult] | None  # None: put `msg`
    queued_at: float
    msg: Message | None = None
    reserved: int = 0  # quota bytes held for a pending put
    done: trio.Event = field(default_factory=trio.Event)
    result: object = None
    error: BaseException | None = None


def _thread_write_bytes() -> int | None:
    """Bytes this thread has dirtied in the page cache (Linux), for write accounting."""
    try:
        with open("/proc/thread-self/io", "rb") as f:
            for line in f:
                if line.startswith(b"write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


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
        sweep_paused: Callable[[], bool] = lambda: False,
    ):
        self.path = path
        self._writer = writer
        self._reader = reader
        self.quota_bytes = quota_bytes
        self._batch_rows = batch_rows
        self._batch_s = batch_ms / 1000
        self._clock_ms = clock_ms
        self._sweep_every_s = sweep_every_s
        self._sweep_batch = sweep_batch
        self._sweep_paused = sweep_paused  # e.g. a warm box: skip the round
        self.sweeps_skipped = 0
        self._count, self._bytes = ops.read_totals(writer)
        self._reserved = 0
        self._send: trio.MemorySendChannel | None = None
        self._read_limiter = trio.CapacityLimiter(1)
        self.batches = 0  # started
        self.commits = 0
        self.ops_committed = 0
        self.bytes_written = 0  # by the writer thread: WAL appends and checkpoints

    # ---------------------------------------------------------------- opening and closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        quota_bytes: int,
        clock_ms: Callable[[], int],
        batch_rows: int = 64,
        batch_ms: float = 50,
        sweep_every_s: float = 30,
        sweep_batch: int = 256,
        wal_bytes: int = 64 << 20,
        sweep_paused: Callable[[], bool] = lambda: False,
    ) -> MessageStore:
        """Open (creating or migrating) the database file. Blocks briefly; call at startup."""
        path = Path(path)
        if batch_rows < 1 or batch_ms < 0 or quota_bytes < 0:
            raise ValueError("batch_rows must be >= 1, batch_ms and quota_bytes >= 0")
        schema.check_file_header(path)
        existed = path.exists()
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
            schema.migrate(writer, version)
            if not existed:
                schema.fsync_dir(path.parent)
            reader = schema.connect(path)
            schema.configure(reader, wal_bytes=wal_bytes, query_only=True)
            return cls(
                path, writer, reader, quota_bytes=quota_bytes, batch_rows=batch_rows,
                batch_ms=batch_ms, clock_ms=clock_ms, sweep_every_s=sweep_every_s,
                sweep_batch=sweep_batch, sweep_paused=sweep_paused,
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
        if self._send is not None:
            raise RuntimeError("MessageStore.run is already running")
        send, recv = trio.open_memory_channel[_Op](math.inf)
        self._send = send
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._committer, recv)
                nursery.start_soon(self._sweeper)
                task_status.started()
        finally:
            self._send = None
            send.close()
            while True:
                try:
                    op = recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._finish(op, error=StoreClosed("the message store was shut down"))

    async def _committer(self, recv: trio.MemoryReceiveChannel) -> None:
        batch: list[_Op] = []
        try:
            while True:
                batch = [await recv.receive()]
                while len(batch) < self._batch_rows:  # backlog first: never wait with work queued
                    try:
                        batch.append(recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                if len(batch) < self._batch_rows:
                    with trio.move_on_at(batch[0].queued_at + self._batch_s):
                        while len(batch) < self._batch_rows:
                            batch.append(await recv.receive())
                self.batches += 1
                await self._commit(batch)
                batch = []
        finally:
            for op in batch:  # shut down while collecting: nothing of this batch was written
                if not op.done.is_set():
                    self._finish(op, error=StoreClosed("the message store was shut down"))

    async def _commit(self, batch: list[_Op]) -> None:
        try:
            outcomes = await trio.to_thread.run_sync(self._apply, batch)
        except Exception as e:
            if len(batch) == 1 or not isinstance(e, _OP_ERRORS):
                err = _wrap(e, self.path)
                for op in batch:
                    self._finish(op, error=err)
                return
            # One bad operation must not fail its batch-mates: commit them one by one.
            for op in batch:
                await self._commit([op])
            return
        results, written = outcomes
        self.commits += 1
        self.ops_committed += len(batch)
        self.bytes_written += written
        for op, (result, d_count, d_bytes) in zip(batch, results, strict=True):
            self._count += d_count
            self._bytes += d_bytes
            self._finish(op, result=result)

    def _apply(self, batch: list[_Op]) -> tuple[list[ops.WriteResult], int]:
        """Worker thread: one transaction, one commit (= one fsync of the WAL)."""
        conn = self._writer
        before = _thread_write_bytes()
        conn.execute("BEGIN IMMEDIATE")
        try:
            results: list[ops.WriteResult] = []
            puts: list[Message] = []  # consecutive puts go in as one executemany
            for op in batch:
                if op.fn is None:
                    puts.append(op.msg)
                    continue
                if puts:
                    results += ops.put_many(conn, puts)
                    puts = []
                results.append(op.fn(conn))
            if puts:
                results += ops.put_many(conn, puts)
            d_count = sum(r[1] for r in results)
            d_bytes = sum(r[2] for r in results)
            if d_count or d_bytes:
                ops.add_totals(conn, d_count, d_bytes)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        after = _thread_write_bytes()
        written = after - before if before is not None and after is not None else 0
        return results, written

    def _finish(self, op: _Op, *, result=None, error: BaseException | None = None) -> None:
        self._reserved -= op.reserved
        op.reserved = 0
        op.result, op.error = result, error
        op.done.set()

    async def _submit(self, fn, reserved: int = 0, msg: Message | None = None):
        if self._send is None:
            raise StoreClosed("the message store is not running (start MessageStore.run first)")
        op = _Op(fn, trio.current_time(), msg, reserved)
        self._reserved += reserved
        self._send.send_nowait(op)
        await op.done.wait()  # a cancelled caller leaves the op queued: it still commits
        if op.error is not None:
            raise op.error
        return op.result

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(self._sweep_every_s)
            if self._sweep_paused():
                self.sweeps_skipped += 1
                continue
            await self.sweep_expired()

    # ---------------------------------------------------------------- writes

    async def put(self, msg: Message) -> tuple[bool, int]:
        """Store `msg`; returns `(is_new, expiry)` once committed durably.

        A duplicate hash is not an error: it returns `(False, stored expiry)`. Raises StoreFull
        when the message would take the stored data past `quota_bytes`.
        """
        _check_message(msg)
        size = len(msg.data)
        if self._bytes + self._reserved + size > self.quota_bytes:
            existing = await self.get_many(msg.recipient, msg.ns, [msg.hash])
            if existing:
                return False, existing[0].expiry
            raise StoreFull(
                f"message store quota reached: {self._bytes} of {self.quota_bytes} bytes used "
                f"(+{self._reserved} pending); a {size}-byte message does not fit"
            )
        return await self._submit(None, reserved=size, msg=msg)

    async def delete(self, recipient: bytes, ns: int, hashes: list[bytes]) -> list[bytes]:
        """Delete those of `hashes` stored for (recipient, ns); returns the ones deleted."""
        return await self._submit(lambda conn: ops.delete(conn, recipient, ns, hashes))

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
        """Delete every message expired now, `sweep_batch` rows per transaction."""
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
                return total

    async def evict(self, n_bytes: int) -> tuple[int, int]:
        """Free at least `n_bytes` of message data if there is that much: expired messages first,
        then those soonest to expire (by expiry minute). Returns `(messages, bytes)` removed."""
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

    async def flush(self) -> None:
        """Return once everything queued before this call is committed."""
        await self._submit(lambda conn: (None, 0, 0))

    # ---------------------------------------------------------------- reads

    async def _read(self, fn):
        try:
            return await trio.to_thread.run_sync(fn, self._reader, limiter=self._read_limiter)
        except sqlite3.Error as e:
            raise _wrap(e, self.path) from e

    async def retrieve(
        self, recipient: bytes, ns: int, after: bytes | None, max_count: int, max_bytes: int
    ) -> tuple[list[Message], bool]:
        """Unexpired messages of (recipient, ns) stored after `after` (from the start when None
        or unknown), oldest first: at most `max_count` and `max_bytes` of data, but at least one
        if any. Returns `(messages, more)`."""
        now = self._clock_ms()
        return await self._read(
            lambda c: ops.retrieve(c, recipient, ns, after, max_count, max_bytes, now)
        )

    async def get_many(self, recipient: bytes, ns: int, hashes: list[bytes]) -> list[Message]:
        """The stored messages of (recipient, ns) among `hashes` (expired or not), in the order
        asked, for replication."""
        return await self._read(lambda c: ops.get_many(c, recipient, ns, hashes))

    async def hashes_for(self, recipient: bytes) -> list[tuple[int, bytes, int]]:
        """`(ns, hash, expiry)` of every unexpired message of `recipient`, for anti-entropy."""
        now = self._clock_ms()
        return await self._read(lambda c: ops.hashes_for(c, recipient, now))

    async def recipients(self) -> list[bytes]:
        """Every recipient with stored messages, for hand-off on membership change."""
        return await self._read(ops.recipients)

    def totals(self) -> dict:
        """Messages and bytes held, and bytes reserved by stores still queued: running totals
        kept by the committer, so reading them costs nothing."""
        return {"count": self._count, "bytes": self._bytes, "pending_bytes": self._reserved}

    def stats(self) -> dict:
        """Counters for the status API and the storage guard (no I/O beyond two stat calls)."""
        file_bytes = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                file_bytes += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return {
            "count": self._count,
            "bytes": self._bytes,
            "pending_bytes": self._reserved,
            "quota_bytes": self.quota_bytes,
            "file_bytes": file_bytes,
            "batches": self.batches,
            "commits": self.commits,
            "ops_committed": self.ops_committed,
            "bytes_written": self.bytes_written,
        }


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


def _wrap(e: Exception, path: Path) -> StoreError:
    if getattr(e, "sqlite_errorcode", None) == SQLITE_FULL:
        err: StoreError = StoreFull(f"the disk holding {path} is full ({e})")
    elif isinstance(e, sqlite3.Error):
        err = StoreError(f"SQLite error on {path}: {e}")
    else:
        err = StoreError(f"store operation failed: {e!r}")
    err.__cause__ = e
    return err
