"""The onion relay service: op ``onion`` peels one layer, forwards it or runs it, seals the answer.

Why here and not in proto: peeling is pure (``firmware.proto.onion``); this module is only the
I/O around it - links to the next hop, timeouts, admission limits - so the node can serve
onions with two lines::

    relay = OnionRelay(node.identity, node.handler, links=LinkPool(log=log), log=log)
    relay.install(node)   # handler.add_op("onion", ...), node.add_service(...), add_info(...)

Wire: request ``{"op": "onion", "args": {"blob": bytes, "pos": int}}`` where ``pos`` is how many
hops the onion crossed before this one (a client sends 0; each forwarder sends its own + 1).
Answer ``{"blob": bytes}``: this hop's sealed response (see firmware/proto/onion.py). A layer
that does not open or is stale/replayed/too deep gets the one uniform ``bad_request``; overload
gets ``busy`` (so clients route around) before any crypto is spent.

Limits: at most ``max_inflight`` onions in this node at once and ``max_per_link`` from one
link; admission checks (the thermal governor's "too hot: refuse relays") via
``add_admission_check``. Next-hop failures (refused, timeout, unreachable) are reported to the
client sealed in this hop's layer, never to the previous hop in clear.
"""

import os
from collections.abc import Callable
from contextlib import asynccontextmanager

import trio

from firmware.client import wall_ms
from firmware.links import open_pinned_stream
from firmware.proto import onion
from firmware.proto.codec import decode_map, encode_map
from firmware.proto.errors import (
    BadRequest,
    BadResponse,
    Busy,
    MalformedFrame,
    ProtocolError,
    error_for_code,
)
from firmware.proto.frames import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from firmware.proto.limits import MAX_REQUEST_ID, PROTOCOL_VERSION
from firmware.rpc import ConnInfo, error_map

__all__ = ["OnionRelay", "LinkPool", "STORAGE_OPS", "install_onion_relay"]

STORAGE_OPS = frozenset(("store", "retrieve", "delete", "expire", "info"))
"""What an onion's final layer may ask for: the storage RPC, never another onion or a node op."""


def short(node_id: bytes) -> str:
    return node_id[:4].hex()


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
                event = decoder.next_event()
                if event is NEED_DATA:
                    try:
                        data = await self._stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        data = b""
                    decoder.receive_data(data)
                    continue
                if event is CLOSED:
                    raise ConnectionError("the node closed the link")
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
    try:
        with trio.fail_after(timeout):
            stream = await open_pinned_stream(host, port, node_id)
    except trio.TooSlowError:
        raise ConnectionError(f"{host}:{port}: no TLS handshake within {timeout:g} s") from None
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


class LinkPool:
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

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(max(1.0, self.idle_s / 4))
                    self._close_idle()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

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
        await link.ready.wait()
        if link.error is not None:
            raise link.error
        link.last_used = trio.current_time()
        return _Lease(self, key, link)

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


class _Lease:
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


class OnionRelay:
    def __init__(self, identity, handler, *, links: LinkPool, log, clock_ms=wall_ms,
                 rand=os.urandom, max_inflight=512, max_per_link=64, forward_timeout=10.0,
                 replay_max=100_000):
        self.node_id = identity.node_id
        self._secret = identity.x25519_private
        self._pub = identity.x25519_public
        self.handler = handler
        self.links = links
        self.log = log
        self.clock_ms = clock_ms
        self.rand = rand
        self.max_inflight = max_inflight
        self.max_per_link = max_per_link
        self.forward_timeout = forward_timeout
        self.replay = onion.ReplayCache(max_entries=replay_max)
        self.inflight = 0
        self._admission: list[Callable[[], str | None]] = []
        # Where a final layer's request runs. Default: this node's own storage RPC. Placement /
        # replication replaces it with "run it in the recipient's swarm" (see set_executor).
        self.execute = handler.respond
        self.counters = {"peeled": 0, "forwarded": 0, "final": 0, "rejected": 0, "busy": 0,
                         "next_hop_failed": 0}

    # -- wiring -----------------------------------------------------------------------------

    def install(self, node) -> None:
        """Serve op ``onion`` on the node's links and run the link pool as a node service."""
        node.handler.add_op("onion", self.op_onion)
        node.handler.add_info(self.info)
        node.add_service("onion_links", self.links.run)
        node.add_service("onion_relay", self.run)

    def add_admission_check(self, check: Callable[[], str | None]) -> None:
        """``check()`` returns None to admit, or a reason (e.g. "too hot") to answer busy."""
        self._admission.append(check)

    def set_executor(self, execute) -> None:
        """``await execute(frame, conn, now_ms) -> response map`` runs final-layer requests."""
        self.execute = execute

    def info(self) -> dict:
        return {"onion": {**self.counters, **getattr(self.execute, "counters", {}),
                          "inflight": self.inflight, "links": self.links.open_count()}}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        """Housekeeping: forget replay entries whose timestamps left the window."""
        task_status.started()
        while True:
            await trio.sleep(10)
            self.replay.expire(self.clock_ms())

    # -- the op -----------------------------------------------------------------------------

    def _admit(self, conn: ConnInfo):
        for check in self._admission:
            reason = check()
            if reason:
                self.counters["busy"] += 1
                raise Busy(f"this node is not relaying right now ({reason}); use another path")
        if self.inflight >= self.max_inflight:
            self.counters["busy"] += 1
            raise Busy("this node has too many onions in flight; use another path")
        if conn.state.get("onion_inflight", 0) >= self.max_per_link:
            self.counters["busy"] += 1
            raise Busy(f"more than {self.max_per_link} onions in flight on this link; wait")

    async def op_onion(self, frame: dict, conn: ConnInfo, now_ms: int) -> dict:
        rid = frame.get("id") if type(frame.get("id")) is int else None
        args = frame.get("args")
        if type(args) is not dict or set(args) != {"blob", "pos"}:
            raise BadRequest("onion args must be a map with exactly blob (bytes) and pos (int)",
                             field="args", request_id=rid)
        blob, pos = args["blob"], args["pos"]
        if type(blob) is not bytes:
            raise BadRequest("must be bytes (the layer)", field="blob", request_id=rid)
        self._admit(conn)
        self.inflight += 1
        conn.state["onion_inflight"] = conn.state.get("onion_inflight", 0) + 1
        try:
            try:
                peeled = onion.peel(blob, self._secret, self._pub, now_ms=now_ms, position=pos,
                                    replay=self.replay)
            except onion.OnionRejected:
                self.counters["rejected"] += 1
                raise onion.OnionRejected(request_id=rid) from None
            except Busy as e:
                self.counters["busy"] += 1
                e.request_id = rid
                raise
            self.counters["peeled"] += 1
            if peeled.is_final:
                return {"blob": await self._run_final(peeled, conn, now_ms)}
            return {"blob": await self._forward(peeled, pos)}
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
        return onion.seal_response(peeled.key, self.rand(onion.NONCE_SIZE), onion.TAG_FINAL,
                                   encode_map(response))

    async def _forward(self, peeled, pos: int) -> bytes:
        nh = peeled.next_hop
        timeout = max(2.0, self.forward_timeout - 2.0 * pos)
        failure = None
        try:
            link = await self.links.get(nh.node_id, nh.host, nh.port)  # connect_timeout bounds it
            args = {"blob": peeled.inner, "pos": pos + 1}
            if isinstance(link, _Lease):
                ok = await link.request("onion", args, timeout=timeout)
            else:  # a relayed next hop (through the relay hub)
                with trio.fail_after(timeout):
                    ok = await link.request("onion", args)
            carried = ok.get("blob")
            if type(carried) is not bytes:
                failure = ("bad_response", "the next hop answered without a blob")
        except trio.TooSlowError:
            failure = ("timeout", f"the next hop did not answer within {timeout:g} s")
        except ProtocolError as e:  # the next hop refused (uniform rejection, busy, ...)
            failure = (e.code, e.msg)
        except (ConnectionError, OSError) as e:
            failure = ("unreachable", f"cannot reach the next hop: {e}"[:300])
        nonce = self.rand(onion.NONCE_SIZE)
        if failure is not None:
            self.counters["next_hop_failed"] += 1
            if self.log.enabled("debug"):
                self.log.debug("onion_next_hop_failed", next=short(nh.node_id), code=failure[0])
            body = encode_map({"code": failure[0], "msg": failure[1]})
            return onion.seal_response(peeled.key, nonce, onion.TAG_HOP_FAILED, body)
        self.counters["forwarded"] += 1
        return onion.seal_response(peeled.key, nonce, onion.TAG_CARRIED, carried)


class SwarmExecutor:
    """Final-hop execution that follows placement: a ``retrieve`` for a recipient whose swarm
    does not include this node is asked of a swarm member (over a plain client link, so the
    member treats it as the client's request); everything else runs here (stores and signed
    deletes are copied to the swarm by replication's hooks)."""

    def __init__(self, node, relay):
        self.node, self.relay = node, relay
        self.counters = {"forwarded_to_swarm": 0}

    async def __call__(self, frame, conn, now_ms):
        net = getattr(self.node, "network", None)
        args = frame.get("args")
        if net is None or frame.get("op") != "retrieve" or type(args) is not dict:
            return await self.node.handler.respond(frame, conn, now_ms)
        recipient = args.get("recipient")
        m = net.membership
        if type(recipient) is not bytes or len(recipient) != 32 or m.state is None:
            return await self.node.handler.respond(frame, conn, now_ms)
        swarm = list(m.placement.swarm(recipient))
        if self.node.identity.node_id in swarm:
            return await self.node.handler.respond(frame, conn, now_ms)
        rid = frame.get("id") if type(frame.get("id")) is int else None
        for member in swarm:
            rec = m.state.get(member)
            if rec is None or rec.address is None:
                continue
            try:
                with trio.fail_after(self.relay.forward_timeout):
                    link = await self.relay.links.get(member, *rec.address)
                    result = await link.request("retrieve", args)
            except ProtocolError as e:
                return error_map(rid, e.code, e.msg)
            except (ConnectionError, OSError, trio.TooSlowError):
                continue
            self.counters["forwarded_to_swarm"] += 1
            return {"v": 1, "id": rid, "ok": result.to_map() if hasattr(result, "to_map")
                    else result}
        return await self.node.handler.respond(frame, conn, now_ms)


def install_onion_relay(node) -> OnionRelay:
    """Build the relay and its link pool for ``node`` (firmware.node.Node) and plug them in."""
    relay = OnionRelay(node.identity, node.handler, links=LinkPool(log=node.log,
                       clock_ms=node.clock_ms), log=node.log, clock_ms=node.clock_ms)
    relay.install(node)
    relay.set_executor(SwarmExecutor(node, relay))  # uses node.network once it exists
    return relay
