"""Outbound links for forwarding: pinned, pipelined, pooled, closed when idle.

Why not firmware.client.NodeClient: the relay's hot path forwards many small frames to a few
next hops at once. :class:`PipelinedClient` queues frames that arrive while a write is in
progress and sends them in one TLS write, matches answers by id without typing them, and
enforces deadlines with one sweeper task instead of a cancel scope per request - together about
a fifth of a hop's CPU (bench/onion_hop.py). :class:`LinkPool` shares one link per next hop.
"""

from collections.abc import Callable
from contextlib import asynccontextmanager

import trio

from firmware.client import next_frame, open_pinned_link
from firmware.clock import wall_ms
from firmware.net.idle_pool import IdleClosingPool
from firmware.proto.errors import BadResponse, Busy, ProtocolError, error_for_code
from firmware.proto.frames import FrameDecoder, encode_frame
from firmware.proto.limits import MAX_REQUEST_ID, PROTOCOL_VERSION

__all__ = ["PipelinedClient", "pipelined_connect", "LinkPool", "Lease"]


class PipelinedClient:
    """A pinned link that batches: frames queued while one write is in progress go out together
    in the next write (one TLS record and one syscall for many onions), answers are matched by
    id. Leaner than firmware.client.NodeClient (no response typing): the relay's hot path."""

    def __init__(self, stream):
        self._stream = stream
        self._pending: dict[int, list] = {}
        self._next_id = 1
        self._out: list[bytes] = []
        self._writing = False
        self._broken: Exception | None = None

    async def request(self, op: str, args: dict, *, timeout: float | None = None) -> dict:
        """The ok map, the peer's error raised, or trio.TooSlowError after ``timeout`` s
        (checked by a sweeper every 0.25 s: cheaper than a cancel scope per request)."""
        if self._broken is not None:
            raise ConnectionError(f"link is down: {self._broken}")
        rid = self._next_id
        self._next_id = rid + 1 if rid < MAX_REQUEST_ID else 1
        deadline = trio.current_time() + timeout if timeout is not None else None
        slot = [trio.Event(), None, deadline]
        self._pending[rid] = slot
        try:
            self._out.append(encode_frame({"v": PROTOCOL_VERSION, "id": rid, "op": op,
                                           "args": args}))
            if not self._writing:
                await self._flush()
            await slot[0].wait()
        finally:
            self._pending.pop(rid, None)
        response = slot[1]
        if isinstance(response, Exception):
            raise response
        err = response.get("err")
        if err is not None:
            err = err if isinstance(err, dict) else {}
            raise error_for_code(str(err.get("code")), str(err.get("msg")), request_id=rid)
        ok = response.get("ok")
        if type(ok) is not dict:
            raise BadResponse(f"response without an ok map: {response!r:.200}")
        return ok

    async def _flush(self):
        self._writing = True
        try:
            if len(self._pending) > 1:  # others in flight: those sent this tick share the write
                await trio.lowlevel.cancel_shielded_checkpoint()
            while self._out:
                data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
                self._out.clear()
                await self._stream.send_all(data)
        except BaseException as e:  # a cut write leaves the TLS stream unusable for everyone
            self._fail_all(ConnectionError(f"link broke while sending: {type(e).__name__}"))
            if not isinstance(e, (trio.BrokenResourceError, trio.ClosedResourceError)):
                raise
        finally:
            self._writing = False

    async def sweeper(self):
        while True:
            await trio.sleep(0.25)
            now = trio.current_time()
            for slot in list(self._pending.values()):
                if slot[2] is not None and slot[2] <= now and not slot[0].is_set():
                    slot[1] = trio.TooSlowError()
                    slot[0].set()

    async def reader(self, task_status=trio.TASK_STATUS_IGNORED):
        decoder = FrameDecoder()
        task_status.started()
        try:
            while True:
                event = await next_frame(self._stream, decoder)
                rid = event.get("id")
                slot = self._pending.get(rid) if type(rid) is int else None
                if slot is not None:
                    slot[1] = event
                    slot[0].set()
                elif rid is None and "err" in event:
                    raise ConnectionError(f"the node refused the link: {event['err']!r:.200}")
        except (ProtocolError, ConnectionError, trio.ClosedResourceError) as e:
            self._fail_all(e if isinstance(e, ConnectionError) else ConnectionError(str(e)))

    def _fail_all(self, exc):
        self._broken = exc
        self._out.clear()
        for slot in list(self._pending.values()):
            if not slot[0].is_set():
                slot[1] = exc
                slot[0].set()


@asynccontextmanager
async def pipelined_connect(host, port, node_id, *, timeout=10.0, clock_ms=None):
    """Like firmware.client.connect, yielding a :class:`PipelinedClient`."""
    stream = await open_pinned_link(host, port, node_id, timeout)
    client = PipelinedClient(stream)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.reader)
            nursery.start_soon(client.sweeper)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


class _Link:
    __slots__ = ("client", "error", "ready", "closed", "last_used", "inflight")

    def __init__(self):
        self.client = None
        self.error = None
        self.ready = trio.Event()
        self.closed = trio.Event()
        self.last_used = trio.current_time()
        self.inflight = 0


class LinkPool(IdleClosingPool):
    """Outbound pinned links to other nodes, opened on first use, shared, closed when idle.

    ``get(node_id, host, port)`` returns an object with ``await request(op, args) -> ok map``.
    These are plain pinned client links (:class:`PipelinedClient`), not the authenticated
    node-to-node links of firmware/net/peers.py: the forwarder knows who it talks to, the next
    hop does not need to know who forwards - which is all onion forwarding needs. ``reverse`` and ``route``
    are optional lookups ``node_id -> link`` consulted first: a relayed node attached to us,
    and a relayed node reached through its relay (firmware/net/reachability.py).
    """

    def __init__(self, *, log, connect=None, connect_timeout=5.0, idle_s=120.0,
                 max_links=256, clock_ms=wall_ms):
        self.log = log
        self._connect = connect or pipelined_connect
        self.connect_timeout = connect_timeout
        self.idle_s = idle_s
        self.max_links = max_links
        self.clock_ms = clock_ms
        self.reverse: Callable[[bytes], object | None] | None = None
        self.route: Callable[[bytes], object | None] | None = None  # relayed nodes, via a relay
        self._links: dict[tuple, _Link] = {}
        self._nursery: trio.Nursery | None = None
        self.counters = {"opened": 0, "failed": 0, "closed_idle": 0}

    def _close_idle(self):
        now = trio.current_time()
        for key, link in list(self._links.items()):
            if link.client is not None and link.inflight == 0 and now - link.last_used > self.idle_s:
                self.counters["closed_idle"] += 1
                link.closed.set()
                self._links.pop(key, None)

    def open_count(self) -> int:
        return sum(1 for link in self._links.values() if link.client is not None)

    async def get(self, node_id: bytes, host: str, port: int):
        for lookup in (self.reverse, self.route):
            via = lookup(node_id) if lookup is not None else None
            if via is not None:
                return via
        if self._nursery is None:
            raise RuntimeError("LinkPool.run is not running")
        key = (node_id, host, port)
        link = self._links.get(key)
        if link is None:
            if len(self._links) >= self.max_links:
                self._close_idle()
                if len(self._links) >= self.max_links:
                    raise Busy("too many outbound links open; try another path")
            link = _Link()
            self._links[key] = link
            self._nursery.start_soon(self._hold, key, link)
        if not link.ready.is_set():  # an open link (the usual case): no scheduler round trip
            await link.ready.wait()
        if link.error is not None:
            raise link.error
        link.last_used = trio.current_time()
        return Lease(self, key, link)

    def discard(self, key, link):
        if self._links.get(key) is link:
            del self._links[key]
        link.closed.set()

    async def _hold(self, key, link):
        node_id, host, port = key
        try:
            async with self._connect(host, port, node_id, timeout=self.connect_timeout,
                                     clock_ms=self.clock_ms) as client:
                self.counters["opened"] += 1
                link.client = client
                link.ready.set()
                await link.closed.wait()
        except Exception as e:  # noqa: BLE001 - any failure to connect is the caller's error
            self.counters["failed"] += 1
            link.error = e if isinstance(e, (ConnectionError, OSError)) else ConnectionError(
                f"{type(e).__name__}: {e}")
        finally:
            if self._links.get(key) is link:
                del self._links[key]
            if not link.ready.is_set():
                if link.error is None:
                    link.error = ConnectionError("link closed")
                link.ready.set()
            link.client = None


class Lease:
    """One use of a pooled link; a broken link is dropped from the pool on its first failure."""

    __slots__ = ("pool", "key", "link")

    def __init__(self, pool, key, link):
        self.pool, self.key, self.link = pool, key, link

    async def request(self, op, args, *, timeout=None):
        client = self.link.client
        if client is None:
            self.pool.discard(self.key, self.link)
            raise ConnectionError("link to the next hop closed")
        self.link.inflight += 1
        try:
            if timeout is None:
                return await client.request(op, args)
            if isinstance(client, PipelinedClient):
                return await client.request(op, args, timeout=timeout)
            with trio.fail_after(timeout):
                return await client.request(op, args)
        except (ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.pool.discard(self.key, self.link)
            raise
        finally:
            self.link.inflight -= 1
            self.link.last_used = trio.current_time()
