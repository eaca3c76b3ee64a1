"""Every request the node answers, top to bottom, in one place.

    frame ─► rate limit ─► node op? ──yes─► admit(op) ─► the op's handler            (hello,
               (per IP)       │                                                      gossip,
                              no: the storage RPC                                    onion...)
                              ▼
             parse ─► authenticate ─► admit(op) ─► make room ─► replicate ─┐
           (schema)    (signature)    (heat, budget,  (evict for   (copies to the │
                                       quota, power)   a store)     swarm start)  ▼
                                                                    write here ─► answer

Why it is spelled out: a store refused for heat was once still copied to the swarm, because
"start copying" was a guard installed before the heat check and guard order was install order.
Here every stage has a name and a place; a part adds a check by being listed at a stage when the
node builds the pipeline (`admit={"store": [...]}`), and copies start only after admission and
room-making have passed. Nothing raised by a peer's input escapes `respond`: it answers an error
map instead.
"""

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from firmware.proto.errors import InternalError, ProtocolError, RateLimited, StorageFull
from firmware.proto.limits import PROTOCOL_VERSION
from firmware.proto.schema import (
    check_expire_times,
    check_signature,
    check_store_times,
    parse_request,
)
from firmware.store import StoreError, StoreFull
from hal.core.bucket import TokenBucket

__all__ = ["ConnInfo", "RateLimiter", "Pipeline", "ok_map", "error_map", "STORAGE_OPS"]

STORAGE_OPS = frozenset(("store", "retrieve", "delete", "expire", "info"))
MAX_TRACKED_CLIENTS = 10_000  # rate-limit buckets kept; least recently seen dropped beyond


@dataclass
class ConnInfo:
    """Who is on the other end of a link. `peer_id` stays None until the in-band node proof
    (`hello`) sets it; `state` is scratch space for such ops (the hello nonce, onion counts)."""

    client: str  # remote IP: the rate-limit key
    port: int = 0
    peer_id: bytes | None = None
    state: dict = field(default_factory=dict)


def ok_map(rid, result: dict) -> dict:
    return {"v": PROTOCOL_VERSION, "id": rid, "ok": result}


def error_map(rid, code: str, msg: str) -> dict:
    return {"v": PROTOCOL_VERSION, "id": rid, "err": {"code": code, "msg": msg[:4000]}}


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


NodeOp = Callable[[dict, ConnInfo, int], Awaitable[dict]]  # (frame, conn, now_ms) -> ok map
Check = Callable[[object, ConnInfo, int], None]  # (request, conn, now_ms); raises to refuse


class Pipeline:
    """`await pipeline.respond(frame, conn, now_ms)` -> a response map, never raising for
    anything a peer can send.

    Collaborators, each at its stage:
      limiter      RateLimiter (per remote IP)
      storage      firmware.serve.storage_ops.StorageOps: runs a parsed request on the store
      node_ops     {op: handler} for everything that is not the storage RPC
      admit        {op: [check, ...]}: each raises a ProtocolError (busy, write_budget, ...) to
                   refuse; run for node ops (on the frame) and storage ops (on the request)
      make_room    `await make_room(size)` before a store: evicts or raises StorageFull
      replication  has `start_store(req, conn, now_ms) -> copies | None` (copies then
                   `await copies.finish(result) -> extra result fields`) and
                   `await after_write(req, result, conn, now_ms)` for delete / expire
    """

    inline_ops = frozenset(("info",))  # never wait: a listener may answer them in its read loop

    def __init__(self, *, storage, limiter: RateLimiter, node_ops: Mapping[str, NodeOp] = None,
                 admit: Mapping[str, Sequence[Check]] = None, make_room=None, replication=None,
                 log=None):
        self.storage = storage
        self.limiter = limiter
        self.node_ops = dict(node_ops or {})
        clash = STORAGE_OPS & set(self.node_ops)
        if clash:
            raise ValueError(f"node ops may not replace the storage RPC: {sorted(clash)}")
        self.admit = {op: tuple(checks) for op, checks in (admit or {}).items()}
        self.make_room = make_room
        self.replication = replication
        self.log = log
        self.counters = {"requests": 0, "errors": 0, "rate_limited": 0}

    async def respond(self, frame: dict, conn: ConnInfo, now_ms: int) -> dict:
        """Any request frame -> its response map (rate-limited per remote IP)."""
        rid = frame.get("id")
        if type(rid) is not int:
            rid = None
        self.counters["requests"] += 1
        try:
            self.limiter.check(conn.client, now_ms)
            op = frame.get("op")
            handler = self.node_ops.get(op) if type(op) is str else None
            if handler is not None:
                for check in self.admit.get(op, ()):
                    check(frame, conn, now_ms)
                return ok_map(rid, await handler(frame, conn, now_ms))
            return ok_map(rid, await self._storage_rpc(frame, conn, now_ms))
        except ProtocolError as e:
            return self._refused(e, rid)
        except Exception as e:  # a bug must cost one request, not the node
            return self._bug(e, frame, rid)

    async def storage_request(self, frame: dict, conn: ConnInfo, now_ms: int) -> dict:
        """Only the storage RPC, without the per-IP rate limit: requests that arrived inside an
        onion's final layer or through a relay, already admitted and counted where they came in."""
        rid = frame.get("id")
        if type(rid) is not int:
            rid = None
        self.counters["requests"] += 1
        try:
            return ok_map(rid, await self._storage_rpc(frame, conn, now_ms))
        except ProtocolError as e:
            return self._refused(e, rid)
        except Exception as e:  # a bug must cost one request, not the node
            return self._bug(e, frame, rid)

    async def _storage_rpc(self, frame, conn, now_ms) -> dict:
        req = parse_request(frame)  # parse (unknown ops: unknown_op)
        check_signature(req, now_ms)  # authenticate
        if req.op == "store":  # times against this node's clock, before anything travels
            check_store_times(req, now_ms)
        elif req.op == "expire":
            check_expire_times(req, now_ms)
        for check in self.admit.get(req.op, ()):  # admit
            check(req, conn, now_ms)
        try:
            if req.op == "store" and self.make_room is not None:  # make room
                await self.make_room(len(req.data))
            copies = None
            if self.replication is not None and req.op == "store":  # replicate (starts now)
                copies = self.replication.start_store(req, conn, now_ms)
            result = await self.storage.run(req, now_ms)  # write
            if copies is not None:
                result.update(await copies.finish(result))
            elif self.replication is not None and req.op in ("delete", "expire"):
                await self.replication.after_write(req, result, conn, now_ms)
            return result  # answer
        except StoreFull as e:
            raise StorageFull(f"this node is full ({e}); store elsewhere or later",
                              request_id=req.id) from None
        except StoreError as e:
            if self.log:
                self.log.error("store_error", op=req.op, error=str(e))
            raise InternalError("the node's message store failed; see its log",
                                request_id=req.id) from None

    def _refused(self, e: ProtocolError, rid) -> dict:
        self.counters["errors"] += 1
        if isinstance(e, RateLimited):
            self.counters["rate_limited"] += 1
        return error_map(e.request_id if e.request_id is not None else rid, e.code, e.msg)

    def _bug(self, e: Exception, frame: dict, rid) -> dict:
        self.counters["errors"] += 1
        if self.log:
            self.log.error("rpc_internal_error", op=str(frame.get("op"))[:40],
                           error=f"{type(e).__name__}: {e}")
        return error_map(rid, "internal", "internal error in the node; see its log")
