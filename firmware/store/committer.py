"""GroupCommitter: the single writer connection, its queue, and adaptive grouped commits.

Every write of the store goes through here. The committer task takes every operation already
queued (up to `batch_rows`), applies them in one transaction in a worker thread, commits (one
WAL fsync), and only then wakes the callers. A lone write is committed at once; writes that
arrive while a commit is in progress wait for it and then share the next one, so batches form
exactly when there is concurrency (group commit without a timer: the fsync itself is the
window). With `batch_ms > 0` each batch is instead held open up to that long (the committer
before this one: fewer, larger commits under a light steady load, more latency).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from . import ops, schema
from .errors import StoreClosed
from .ops import Change, Message

# errors caused by one operation's values rather than by the database or the disk
OP_ERRORS = (
    sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
    OverflowError, TypeError, ValueError,
)


@dataclass(eq=False, slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], Change] | None  # None: put `msg`
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


class GroupCommitter:
    def __init__(self, conn: sqlite3.Connection, path: Path, *, batch_rows: int,
                 batch_ms: float, account: Callable[[Change], None]):
        self.conn = conn
        self.path = path
        self._batch_rows = batch_rows
        self._batch_s = batch_ms / 1000
        self._account = account  # the store's running totals, told of each committed change
        self._send: trio.MemorySendChannel | None = None
        self._lock = trio.Lock()  # the connection: one worker thread at a time
        self.pending_bytes = 0  # quota bytes of puts queued or in a commit
        self.reusable_bytes = ops.freelist_bytes(conn)
        self.write_problem: str | None = None  # why the last commit failed, until one succeeds
        self.batches = 0  # started
        self.commits = 0
        self.ops_committed = 0
        self.bytes_written = 0  # by the writer thread: WAL appends and checkpoints

    @property
    def running(self) -> bool:
        return self._send is not None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self._send is not None:
            raise RuntimeError("the message store is already running")
        send, recv = trio.open_memory_channel[_Op](math.inf)
        self._send = send
        try:
            task_status.started()
            await self._loop(recv)
        finally:
            self._send = None
            send.close()
            while True:
                try:
                    op = recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._finish(op, error=StoreClosed("the message store was shut down"))

    async def submit(self, fn=None, *, msg: Message | None = None, reserved: int = 0):
        """Queue `fn(conn) -> Change` (or a put of `msg`) and return its result once durable."""
        if self._send is None:
            raise StoreClosed("the message store is not running (start MessageStore.run first)")
        op = _Op(fn, trio.current_time(), msg, reserved)
        self.pending_bytes += reserved
        self._send.send_nowait(op)
        await op.done.wait()  # a cancelled caller leaves the op queued: it still commits
        if op.error is not None:
            raise op.error
        return op.result

    async def exclusive(self, fn: Callable[[sqlite3.Connection], object]):
        """Run `fn(conn)` in a worker thread outside any transaction, between commits."""
        async with self._lock:
            return await trio.to_thread.run_sync(fn, self.conn)

    def _take_waiting(self, recv: trio.MemoryReceiveChannel, batch: list[_Op]) -> None:
        while len(batch) < self._batch_rows:
            try:
                batch.append(recv.receive_nowait())
            except trio.WouldBlock:
                return

    async def _loop(self, recv: trio.MemoryReceiveChannel) -> None:
        batch: list[_Op] = []
        try:
            while True:
                batch = [await recv.receive()]
                self._take_waiting(recv, batch)  # backlog first: never wait with work queued
                if self._batch_s > 0:  # fixed window: hold the batch open for batch-mates
                    if len(batch) < self._batch_rows:
                        with trio.move_on_at(batch[0].queued_at + self._batch_s):
                            while len(batch) < self._batch_rows:
                                batch.append(await recv.receive())
                elif len(batch) == 1:
                    # Adaptive: let the tasks that are runnable right now (requests read in the
                    # same poll) queue their writes, then commit whatever is there at once.
                    await trio.lowlevel.checkpoint()
                    self._take_waiting(recv, batch)
                self.batches += 1
                await self._commit(batch)
                batch = []
        finally:
            for op in batch:  # shut down while collecting: nothing of this batch was written
                if not op.done.is_set():
                    self._finish(op, error=StoreClosed("the message store was shut down"))

    async def _commit(self, batch: list[_Op]) -> None:
        try:
            async with self._lock:
                changes, written, reusable = await trio.to_thread.run_sync(self._apply, batch)
        except Exception as e:
            if len(batch) == 1 or not isinstance(e, OP_ERRORS):
                err = schema.store_error(e, self.path)
                if not isinstance(e, OP_ERRORS):
                    self.write_problem = str(err)
                for op in batch:
                    self._finish(op, error=err)
                return
            # One bad operation must not fail its batch-mates: commit them one by one.
            for op in batch:
                await self._commit([op])
            return
        self.write_problem = None
        self.reusable_bytes = reusable
        self.commits += 1
        self.ops_committed += len(batch)
        self.bytes_written += written
        for op, change in zip(batch, changes, strict=True):
            self._account(change)
            self._finish(op, result=change.result)

    def _apply(self, batch: list[_Op]) -> tuple[list[Change], int, int]:
        """Worker thread: one transaction, one commit (= one fsync of the WAL)."""
        conn = self.conn
        before = _thread_write_bytes()
        try:
            conn.execute("BEGIN IMMEDIATE")
            changes: list[Change] = []
            puts: list[Message] = []  # consecutive puts go in as one executemany
            for op in batch:
                if op.fn is None:
                    puts.append(op.msg)
                    continue
                if puts:
                    changes += ops.put_many(conn, puts)
                    puts = []
                changes.append(op.fn(conn))
            if puts:
                changes += ops.put_many(conn, puts)
            d = [sum(c[i] for c in changes) for i in (1, 2, 3)]
            if any(d):
                ops.add_totals(conn, *d)
            reusable = ops.freelist_bytes(conn)
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                self._restart_wal()
            raise
        after = _thread_write_bytes()
        written = after - before if before is not None and after is not None else 0
        return changes, written, reusable

    def _restart_wal(self) -> None:
        """After a commit failed for a full disk: copy the WAL into the database and make the
        next commit write the WAL from its start, in space the file already has."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except sqlite3.Error:
            pass  # no room even for that: the guard's eviction and the reserve take it from here

    def _finish(self, op: _Op, *, result=None, error: BaseException | None = None) -> None:
        self.pending_bytes -= op.reserved
        op.reserved = 0
        op.result, op.error = result, error
        op.done.set()
