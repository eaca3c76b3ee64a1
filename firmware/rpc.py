"""Storage RPC: a parsed request + who sent it + the time in, a result map out (or an error).

Why socket-free: every rule of docs/protocol.md that depends on the node (authentication, the
clock window, quotas, per-client rate limits, how store errors look on the wire) lives here and
is tested in-process with trio's MockClock; `firmware.links` only moves frames.

    handler = RpcHandler(store, node_id, rate_per_sec=300, rate_burst=600, log=log)
    response_map = await handler.respond(frame_dict, ConnInfo("192.0.2.1"), now_ms)

`respond` never raises for anything a peer can send: it returns `{"v","id","ok"}` or
`{"v","id","err"}`. Extension seams: `add_info(fn)` adds fields to `info` (and so to `homenode
status`); `add_op(name, fn)` serves an op proto does not know (the network work's `hello`).
"""

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from firmware import __version__
from firmware.proto.errors import (
    InternalError,
    ProtocolError,
    RateLimited,
    StorageFull,
)
from firmware.proto.hashing import message_hash
from firmware.proto.limits import PROTOCOL_VERSION, max_ttl
from firmware.proto.schema import (
    check_expire_times,
    check_signature,
    check_store_times,
    parse_request,
)
from firmware.store import Message, StoreError, StoreFull
from hal.core.bucket import TokenBucket

MAX_TRACKED_CLIENTS = 10_000  # rate-limit buckets kept; least recently seen dropped beyond


@dataclass
class ConnInfo:
    """Who is on the other end of a link. `peer_id` stays None until an in-band identity proof
    (node-to-node `hello`, network work) sets it; `state` is scratch space for such ops."""

    client: str  # remote IP: the rate-limit key
    port: int = 0
    peer_id: bytes | None = None
    state: dict = field(default_factory=dict)


class RateLimiter:
    """One token bucket per client key (remote IP), least recently used dropped past a cap."""

    def __init__(self, rate_per_sec: float, burst: int, max_clients: int = MAX_TRACKED_CLIENTS):
        self.rate = rate_per_sec
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, client: str, now_ms: int) -> None:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now_ms)
            self._buckets[client] = bucket
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        if not bucket.take(1, now_ms):
            wait = bucket.wait_ms(1, now_ms)
            raise RateLimited(
                f"too many requests from {client}: at most {self.rate:g}/s sustained, "
                f"bursts of {self.burst}; retry in {wait} ms"
            )

    def set_rate(self, rate_per_sec: float, burst: int, now_ms: int) -> None:
        """Governors (thermal, bandwidth) may tighten or relax the limit at run time."""
        self.rate, self.burst = rate_per_sec, burst
        for b in self._buckets.values():
            b.set_rate(rate_per_sec, burst, now_ms)


def ok_map(rid, result: dict) -> dict:
    return {"v": PROTOCOL_VERSION, "id": rid, "ok": result}


def error_map(rid, code: str, msg: str) -> dict:
    return {"v": PROTOCOL_VERSION, "id": rid, "err": {"code": code, "msg": msg[:4000]}}


class RpcHandler:
    def __init__(
        self,
        store,
        node_id: bytes,
        *,
        rate_per_sec: float = 300.0,
        rate_burst: int = 600,
        log=None,
        state: Callable[[], str] = lambda: "serving",
        monotonic: Callable[[], float] = time.monotonic,
        info_cache_ms: int = 1,
    ):
        self.store = store
        self.node_id = node_id
        self.limiter = RateLimiter(rate_per_sec, rate_burst)
        self.log = log
        self.state = state
        self._monotonic = monotonic
        self._started = monotonic()
        self._info_sources: list[Callable[[], dict]] = []
        # The other subsystems' `info` fields (~1 KB of maps, several us to build) are reused
        # for requests whose time is within info_cache_ms of when they were built: under load
        # many `info`s arrive per millisecond, and a status a millisecond old is still current.
        # 0 rebuilds them on every call.
        self.info_cache_ms = info_cache_ms
        self._extra_info: dict | None = None
        self._extra_info_ms = 0
        self._extra_ops: dict[str, Callable[[dict, ConnInfo, int], Awaitable[dict]]] = {}
        self._op_hooks: dict[str, list] = {}
        self._op_guards: dict[str, list] = {}
        self.counters = {"requests": 0, "errors": 0, "rate_limited": 0}
        # Ops whose handling never waits: a link answers them in its read loop instead of
        # spawning a task (saves ~12 us per request). Add an op only if it never blocks.
        self.inline_ops = {"info"}
        self._stats: dict = {}
        self._stats_commits = None
        self._ops = {
            "store": self._store,
            "retrieve": self._retrieve,
            "delete": self._delete,
            "expire": self._expire,
            "info": self._info,
        }

    # -- extension seams ------------------------------------------------------------------

    def add_info(self, source: Callable[[], dict]) -> None:
        """`source()` returns extra `info` fields (CBOR-encodable, text keys); it is called at
        most once per `info_cache_ms` of request time (see __init__)."""
        self._info_sources.append(source)
        self._extra_info = None

    def add_op(self, name: str, fn: Callable[[dict, ConnInfo, int], Awaitable[dict]]) -> None:
        """Serve `name` with `await fn(frame, conn, now_ms) -> result map` (raise ProtocolError)."""
        if name in self._ops:
            raise ValueError(f"op {name!r} is already served")
        self._extra_ops[name] = fn

    def add_op_hook(self, op: str, fn) -> None:
        """After `op` succeeded here: `extra = await fn(req, result, conn, now_ms)` is merged
        into its result (replication forwards a store to the swarm and adds `replicas`)."""
        self._op_hooks.setdefault(op, []).append(fn)

    def add_op_guard(self, op: str, fn) -> None:
        """Before `op` runs (after its signature check): `await fn(req, conn, now_ms)` may raise
        a ProtocolError to refuse it (device governors: busy when hot, write budget)."""
        self._op_guards.setdefault(op, []).append(fn)

    # -- entry points ---------------------------------------------------------------------

    async def respond(self, frame: dict, conn: ConnInfo, now_ms: int) -> dict:
        """A decoded request frame -> the response map. Never raises for peer input."""
        rid = frame.get("id")
        if type(rid) is not int:
            rid = None
        try:
            self.counters["requests"] += 1
            self.limiter.check(conn.client, now_ms)
            op = frame.get("op")
            extra = self._extra_ops.get(op) if type(op) is str else None
            if extra is not None:
                return ok_map(rid, await extra(frame, conn, now_ms))
            req = parse_request(frame)
            return ok_map(req.id, await self.handle(req, conn, now_ms))
        except ProtocolError as e:
            self.counters["errors"] += 1
            if isinstance(e, RateLimited):
                self.counters["rate_limited"] += 1
            rid = e.request_id if e.request_id is not None else rid
            return error_map(rid, e.code, e.msg)
        except Exception as e:  # a bug must cost one request, not the node
            self.counters["errors"] += 1
            if self.log:
                self.log.error("rpc_internal_error", op=str(frame.get("op"))[:40],
                               error=f"{type(e).__name__}: {e}")
            return error_map(rid, "internal", "internal error in the node; see its log")

    async def handle(self, req, conn: ConnInfo, now_ms: int) -> dict:
        """A parsed request -> its result map; raises ProtocolError subclasses."""
        check_signature(req, now_ms)
        for guard in self._op_guards.get(req.op, ()):
            await guard(req, conn, now_ms)
        try:
            result = await self._ops[req.op](req, now_ms)
            for hook in self._op_hooks.get(req.op, ()):
                result.update(await hook(req, result, conn, now_ms))
            return result
        except StoreFull as e:
            raise StorageFull(f"this node is full ({e}); store elsewhere or later",
                              request_id=req.id) from None
        except StoreError as e:
            if self.log:
                self.log.error("store_error", op=req.op, error=str(e))
            raise InternalError("the node's message store failed; see its log",
                                request_id=req.id) from None

    # -- ops ------------------------------------------------------------------------------

    async def _store(self, req, now_ms):
        check_store_times(req, now_ms)
        h = message_hash(req.recipient, req.ns, req.ts, req.data)
        is_new, expiry = await self.store.put(
            Message(h, req.recipient, req.ns, req.ts, req.ts + req.ttl, req.data)
        )
        return {"hash": h, "new": is_new, "expiry": expiry}

    async def _retrieve(self, req, now_ms):
        messages, more = await self.store.retrieve(
            req.recipient, req.ns, req.after, req.max_count, req.max_bytes
        )
        return {
            "messages": [
                {"hash": m.hash, "ts": m.ts, "expiry": m.expiry, "data": m.data} for m in messages
            ],
            "more": more,
        }

    async def _delete(self, req, now_ms):
        return {"deleted": await self.store.delete(req.recipient, req.ns, list(req.hashes))}

    async def _expire(self, req, now_ms):
        check_expire_times(req, now_ms)
        updated = await self.store.set_expiry(
            req.recipient, req.ns, list(req.hashes), req.expiry, max_ttl_ms=max_ttl(req.ns)
        )
        return {"updated": updated}

    def _store_stats(self) -> dict:
        """store.stats() (three stat(2) calls) only when a commit happened since the last one:
        its numbers cannot change otherwise, and `info` is the cheapest, most frequent call."""
        commits = getattr(self.store, "commits", None)
        if commits is None or commits != self._stats_commits:
            self._stats = self.store.stats()
            self._stats_commits = commits
        return self._stats

    def _extra_info_at(self, now_ms: int) -> dict:
        """Every add_info source's fields merged (later sources win), rebuilt when older than
        info_cache_ms at `now_ms` (or when `now_ms` went backwards)."""
        extra = self._extra_info
        if extra is None or not 0 <= now_ms - self._extra_info_ms < self.info_cache_ms:
            extra = {}
            for source in self._info_sources:
                extra.update(source())
            self._extra_info, self._extra_info_ms = extra, now_ms
        return extra

    async def _info(self, req, now_ms):
        stats = self._store_stats()
        info = {
            "node_id": self.node_id,
            "version": __version__,
            "time": now_ms,
            "state": self.state(),
            "uptime_s": int(self._monotonic() - self._started),
            "messages": stats["count"],
            "bytes": stats["bytes"],
            "quota_bytes": stats["quota_bytes"],
            "requests": self.counters["requests"],
        }
        if self._info_sources:
            info.update(self._extra_info_at(now_ms))
        return info
