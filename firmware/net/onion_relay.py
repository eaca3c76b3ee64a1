"""The onion relay service: op ``onion`` peels one layer, forwards it or runs it, seals the answer.

Why here and not in proto: peeling is pure (``firmware.proto.onion``); this module is only the
I/O around it - links to the next hop, timeouts, admission limits - built once by the node::

    relay = OnionRelay(identity, forward_pool, execute=SwarmExecutor(...), log=log)
    # pipeline node op "onion" -> relay.op_onion; service relay.run (replay cache upkeep)

Wire (v2): request ``{"op": "onion", "args": {"blob": bytes}}``, a fixed-size packet; no hop is
told its position. Answer ``{"blob": bytes}``: this hop's answer, of the onion's response class
(see firmware/proto/onion.py). A layer that does not open or is stale/replayed gets the one
uniform ``onion_rejected``; overload gets ``busy`` (so clients route around) before any crypto
is spent.

Limits: at most ``max_inflight`` onions in this node at once and ``max_per_link`` from one
link; the device's admission checks ("too hot: refuse relays") run before the op, at the
pipeline's admit stage. Next-hop failures (refused, timeout, unreachable) are reported to the
client sealed in this hop's layer, never to the previous hop in clear.
"""

import os

import trio

from firmware.clock import wall_ms
from firmware.link import LinkDown, LinkTimeout
from firmware.logs import short_id as short
from firmware.proto import onion
from firmware.proto.codec import decode_map, encode_map
from firmware.proto.errors import BadRequest, Busy, MalformedFrame, ProtocolError
from firmware.serve.pipeline import STORAGE_OPS, ConnInfo, error_map, ok_map

__all__ = ["OnionRelay", "SwarmExecutor", "STORAGE_OPS"]


class OnionRelay:
    def __init__(self, identity, pool, *, execute, log, clock_ms=wall_ms, rand=os.urandom,
                 max_inflight=512, max_per_link=64, forward_timeout=onion.HOP_TIMEOUT_S,
                 replay_max=100_000):  # fmt: skip
        """`pool`: pinned links to next hops (a LinkPool that also routes to relayed nodes);
        `execute(frame, conn, now_ms) -> response map` runs a final layer's request."""
        self.node_id = identity.node_id
        self._secret = identity.x25519_private
        self._pub = identity.x25519_public
        self.pool = pool
        self.execute = execute
        self.log = log
        self.clock_ms = clock_ms
        self.rand = rand
        self.max_inflight = max_inflight
        self.max_per_link = max_per_link
        self.forward_timeout = forward_timeout
        self.replay = onion.ReplayCache(max_entries=replay_max)
        self.inflight = 0
        self.counters = {"peeled": 0, "forwarded": 0, "final": 0, "rejected": 0, "busy": 0,
                         "next_hop_failed": 0}
        # bytes of every layer taken and every answer given, by size: the size classes are all
        # an observer of this hop learns, and status shows that nothing else ever passed
        self.sizes = {"in": {}, "out": {}}

    def info(self) -> dict:
        return {**self.counters, "inflight": self.inflight, "links": self.pool.open_count(),
                "sizes_in": dict(self.sizes["in"]), "sizes_out": dict(self.sizes["out"])}

    def _count_size(self, way, n):
        seen, key = self.sizes[way], str(n)  # text keys: status travels as CBOR
        if key in seen or len(seen) < 16:  # a flood of odd sizes is not worth remembering
            seen[key] = seen.get(key, 0) + 1

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        """Housekeeping: forget replay entries whose timestamps left the window."""
        task_status.started()
        while True:
            await trio.sleep(10)
            self.replay.expire(self.clock_ms())

    # -- the op -----------------------------------------------------------------------------

    def _admit(self, conn: ConnInfo):
        if self.inflight >= self.max_inflight:
            self.counters["busy"] += 1
            raise Busy("this node has too many onions in flight; use another path")
        if conn.state.get("onion_inflight", 0) >= self.max_per_link:
            self.counters["busy"] += 1
            raise Busy(f"more than {self.max_per_link} onions in flight on this link; wait")

    async def op_onion(self, frame: dict, conn: ConnInfo, now_ms: int) -> dict:
        rid = frame.get("id")
        if type(rid) is not int:
            rid = None
        args = frame.get("args")
        if type(args) is not dict or len(args) != 1 or "blob" not in args:
            raise BadRequest("onion args must be a map with exactly blob (bytes)",
                             field="args", request_id=rid)
        blob = args["blob"]
        if type(blob) is not bytes:
            raise BadRequest("must be bytes (the layer)", field="blob", request_id=rid)
        self._admit(conn)
        self.inflight += 1
        conn.state["onion_inflight"] = conn.state.get("onion_inflight", 0) + 1
        try:
            try:
                peeled = onion.peel(blob, self._secret, self._pub, now_ms=now_ms,
                                    replay=self.replay)
            except onion.OnionRejected:
                self.counters["rejected"] += 1
                raise onion.OnionRejected(request_id=rid) from None
            except Busy as e:
                self.counters["busy"] += 1
                e.request_id = rid
                raise
            self.counters["peeled"] += 1
            self._count_size("in", len(blob))
            if peeled.is_final:
                answer = await self._run_final(peeled, conn, now_ms)
            else:
                answer = await self._forward(peeled)
            self._count_size("out", len(answer))
            return {"blob": answer}
        finally:
            self.inflight -= 1
            conn.state["onion_inflight"] -= 1

    async def _run_final(self, peeled, conn: ConnInfo, now_ms: int) -> bytes:
        self.counters["final"] += 1
        try:
            frame = decode_map(peeled.inner, "onion request")
            op = frame.get("op")
            if op not in STORAGE_OPS:
                rid = frame.get("id") if type(frame.get("id")) is int else None
                response = error_map(rid, "unknown_op", f"op {str(op)[:40]!r} cannot be sent "
                                     f"through an onion; use one of {', '.join(sorted(STORAGE_OPS))}")
            else:
                inner_conn = ConnInfo(f"onion/{conn.client}", conn.port)
                response = await self.execute(frame, inner_conn, now_ms)
        except MalformedFrame as e:
            response = error_map(None, e.code, e.msg)
        except Exception as e:  # a bug here costs this request, answered inside the layer
            self.log.error("onion_final_failed", error=f"{type(e).__name__}: {e}"[:300])
            response = error_map(None, "internal", "internal error at the final hop; retry")
        return onion.seal_final(peeled.key, encode_map(response))

    async def _forward(self, peeled) -> bytes:
        nh = peeled.next_hop
        timeout = self.forward_timeout  # v2: no hop knows its position to shorten it by
        failure = None
        try:
            ok = await self.pool.request(nh.node_id, (nh.host, nh.port), "onion",
                                         {"blob": peeled.inner}, timeout=timeout)
            carried = ok.get("blob")
            if type(carried) is not bytes or len(carried) != peeled.key.response_size:
                failure = ("bad_response", "the next hop answered without a blob of the class")
        except (LinkTimeout, trio.TooSlowError):
            failure = ("timeout", f"the next hop did not answer within {timeout:g} s")
        except ProtocolError as e:  # the next hop refused (uniform rejection, busy, ...)
            failure = (e.code, e.msg)
        except (ConnectionError, OSError) as e:
            failure = ("unreachable", f"cannot reach the next hop: {e}"[:300])
        if failure is not None:
            self.counters["next_hop_failed"] += 1
            if self.log.enabled("debug"):
                self.log.debug("onion_next_hop_failed", next=short(nh.node_id), code=failure[0])
            return onion.seal_failure(peeled.key, *failure)
        self.counters["forwarded"] += 1
        return onion.carry_response(peeled.key, carried)


class SwarmExecutor:
    """Final-hop execution that follows placement: a ``retrieve`` for a recipient whose swarm
    does not include this node is asked of a swarm member (over a plain link, so the member
    treats it as the client's request); everything else runs here through the node's storage
    pipeline (stores and signed deletes are copied to the swarm by its replicate stage)."""

    def __init__(self, node_id, roster, pool, run_here, *, timeout=10.0):
        """`roster`: None on a lone mailbox (everything runs here)."""
        self.node_id, self.roster, self.pool = node_id, roster, pool
        self.run_here = run_here  # (frame, conn, now_ms) -> response map
        self.timeout = timeout
        self.counters = {"forwarded_to_swarm": 0}

    async def __call__(self, frame, conn, now_ms):
        args = frame.get("args")
        if frame.get("op") != "retrieve" or type(args) is not dict:
            return await self.run_here(frame, conn, now_ms)
        recipient = args.get("recipient")
        if self.roster is None or type(recipient) is not bytes or len(recipient) != 32:
            return await self.run_here(frame, conn, now_ms)
        swarm = list(self.roster.swarm(recipient))
        if self.node_id in swarm:
            return await self.run_here(frame, conn, now_ms)
        rid = frame.get("id") if type(frame.get("id")) is int else None
        for member in swarm:
            address = self.roster.address_of(member)
            if address is None:
                continue
            try:
                result = await self.pool.request(member, address, "retrieve", args,
                                                 timeout=self.timeout)
            except ProtocolError as e:
                return error_map(rid, e.code, e.msg)
            except (LinkDown, OSError):
                continue
            self.counters["forwarded_to_swarm"] += 1
            return ok_map(rid, result)
        return await self.run_here(frame, conn, now_ms)
