"""The one frame writer every link uses: frames sent while a write is in progress go out together.

Why: a TLS record and a send syscall cost about as much as the work of a small request, so a
busy link (a relay forwarding many onions, a listener answering a pipelining client) should pay
them once per burst, not once per frame. Used by the server side of a connection
(firmware/serve/listener.py) and by outbound links (firmware/link/link.py) alike.
"""

import trio

__all__ = ["Outbox"]


class _Batch:
    """Frames queued while a write was in progress; `done` is set once they were all written
    (or the link broke: then `error` says why)."""

    __slots__ = ("frames", "done", "error")

    def __init__(self):
        self.frames: list[bytes] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


class Outbox:
    """One link's writer: frames sent while a TLS write is in progress are queued and go out
    together in the next write (one TLS record and one syscall instead of one per answer).

    Why no writer task: the first sender writes itself (no task switch when uncontended, the
    usual case) and keeps writing until the queue is empty; later senders wait until their
    batch was written. Order on the wire = order of `send` calls. The queue is bounded by the
    callers: each waits (holding its in-flight slot) until its frame is written, so the
    listener's in-flight limit bounds it and a peer that stops reading still stops the node
    reading its requests. A failed or cancelled write breaks the link for every queued frame.
    """

    __slots__ = ("stream", "write_started", "_next", "_writing", "_error", "max_write",
                 "_on_write")

    def __init__(self, stream, *, max_write: int = 256 * 1024, on_write=None):
        self.stream = stream
        self._on_write = on_write  # called as each write begins (a listener's stall watch)
        self.max_write = max_write  # bytes joined into one send_all at most
        self.write_started: float | None = None  # when the write in progress began
        self._next: _Batch | None = None  # frames waiting for the next write
        self._writing = False
        self._error: BaseException | None = None

    @property
    def broken(self) -> BaseException | None:
        """Why the stream is unusable (a failed or cancelled write), or None."""
        return self._error

    async def post(self, data: bytes, *, linger: bool = False) -> None:
        """Like `send`, but when a write is already in progress just queue `data` behind it and
        return: the writer sends it with the next batch. For requests, whose answer proves the
        write happened (and whose failure the link reports to every waiting request); answers a
        server sends use `send`, whose wait is what holds their in-flight slot (backpressure)."""
        if self._writing and self._error is None:
            batch = self._next
            if batch is None:
                batch = self._next = _Batch()
            batch.frames.append(data)
            return
        await self.send(data, linger=linger)

    async def send(self, data: bytes, *, linger: bool = False) -> None:
        """Write `data` (one encoded frame) after everything sent before it; return once it was
        written. BrokenResourceError if the link broke (before or while writing it).

        `linger`: more frames are probably coming right now (other answers in flight); if no
        write is in progress, wait one scheduler tick first so those finishing in the same
        tick share this write instead of following it in a second one."""
        if self._error is not None:
            raise trio.BrokenResourceError(f"link broke earlier: {self._error!r}")
        if self._writing:
            batch = self._next
            if batch is None:
                batch = self._next = _Batch()
            batch.frames.append(data)
            await batch.done.wait()
            if batch.error is not None:
                raise trio.BrokenResourceError(f"link broke while sending: {batch.error!r}")
            return
        self._writing = True
        batch = None
        own = [data]
        try:
            if linger:
                await trio.lowlevel.cancel_shielded_checkpoint()
                if self._next is not None:  # frames queued during the tick share our write
                    batch, self._next = self._next, None
                    own.extend(batch.frames)
            if len(own) == 1:  # the usual case: no join, no extra coroutine
                self.write_started = trio.current_time()
                if self._on_write is not None:
                    self._on_write()
                await self.stream.send_all(data)
            else:
                await self._write(own)
            own = None
            if batch is not None:
                batch.done.set()
                batch = None
            while self._next is not None:  # then the frames queued meanwhile, in order
                batch, self._next = self._next, None
                await self._write(batch.frames)
                batch.done.set()
                batch = None
        except BaseException as e:
            self._error = e
            for waiting in (batch, self._next):
                if waiting is not None:
                    waiting.error = e
                    waiting.done.set()
            self._next = None
            # ours went out before the link broke: the queued senders report the break
            broken = isinstance(e, trio.BrokenResourceError | trio.ClosedResourceError)
            if own is not None or not broken:
                raise
        finally:
            self._writing = False
            self.write_started = None

    async def _write(self, frames: list[bytes]) -> None:
        i, n = 0, len(frames)
        while i < n:
            if n == 1:
                data, i = frames[0], 1
            else:
                j, size = i, 0
                while j < n and (j == i or size + len(frames[j]) <= self.max_write):
                    size += len(frames[j])
                    j += 1
                data, i = b"".join(frames[i:j]), j
            self.write_started = trio.current_time()
            if self._on_write is not None:
                self._on_write()
            await self.stream.send_all(data)
