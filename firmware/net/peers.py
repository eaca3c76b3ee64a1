"""Node-to-node links: the in-band identity proof (hello), a pool of outbound links, ping.

Why in-band: Python's ``ssl`` cannot accept arbitrary client certificates without a trust store,
so TLS only authenticates the *server* (the client pins its id). The connecting node then proves
who it is inside the channel (DESIGN.md, "Links")::

    -> {"op": "challenge", "args": {}}                  <- {"nonce": 32 bytes, "node_id": server}
    -> {"op": "hello", "args": {"node_id": me, "sig": Ed25519(me, "homenode/v1/hello\\0" +
        server id + nonce + my id), "record": my signed record}}   <- {"record": server's record}

The nonce is fresh per link and single-use, so a recorded hello cannot be replayed on another
link; after it the server sets ``conn.peer_id`` and node-only ops (gossip, replicate, ...) are
served on that link. ``ping`` (a reachability test) needs no hello: it answers with a signature
over (tester id, tester nonce, own id), which proves the advertised address reaches the key.
"""

import os
from contextlib import asynccontextmanager

import trio

from firmware.client import connect as client_connect
from firmware.net.idle_pool import IdleClosingPool
from firmware.proto.errors import BadRequest, ProtocolError
from firmware.proto.records import RecordError, sign_hello, sign_ping, verify_hello, verify_ping

__all__ = [
    "PeerUnavailable",
    "args_of",
    "need_bytes",
    "require_peer",
    "PeerAuth",
    "authenticated_connect",
    "PeerLinks",
    "ping",
]


class PeerUnavailable(ConnectionError):
    """Could not reach a peer, or the link broke / timed out: try another or later."""


# -- argument checks shared by the node-only ops ----------------------------------------------


def args_of(frame):
    args = frame.get("args", {})
    if type(args) is not dict:
        raise BadRequest("args must be a map", field="args")
    return args


def need_bytes(args, name, size=None):
    v = args.get(name)
    if type(v) is not bytes or (size is not None and len(v) != size):
        want = f"{size} bytes" if size else "bytes"
        raise BadRequest(f"must be {want}", field=name)
    return v


def require_peer(conn, op):
    """The authenticated peer id of this link, or BadRequest telling the caller what to do."""
    if conn.peer_id is None:
        raise BadRequest(f"op {op!r} is for nodes only: send 'challenge' then 'hello' first")
    return conn.peer_id


# -- server side --------------------------------------------------------------------------------


class PeerAuth:
    """Serves ``challenge``, ``hello`` and ``ping``; ``on_record(peer_id, wire)`` gets the record
    a peer sends with its hello (membership merges it); ``own_record()`` is ours to send back."""

    def __init__(self, identity, *, own_record, on_record, rand=os.urandom, denied=frozenset()):
        self.identity = identity
        self.denied = denied  # node ids refused by the operator ([network] deny)
        self.own_record = own_record
        self.on_record = on_record
        self.rand = rand
        self.counters = {"hello_ok": 0, "hello_refused": 0, "pings_answered": 0}

    def install(self, handler):
        handler.add_op("challenge", self.challenge)
        handler.add_op("hello", self.hello)
        handler.add_op("ping", self.ping)

    async def challenge(self, frame, conn, now_ms):
        nonce = self.rand(32)
        conn.state["hello_nonce"] = nonce
        return {"nonce": nonce, "node_id": self.identity.node_id}

    async def hello(self, frame, conn, now_ms):
        args = args_of(frame)
        peer_id = need_bytes(args, "node_id", 32)
        sig = need_bytes(args, "sig", 64)
        nonce = conn.state.pop("hello_nonce", None)  # single use, whatever the outcome
        if nonce is None:
            self.counters["hello_refused"] += 1
            raise BadRequest("hello without a challenge on this link: send 'challenge' first")
        if peer_id in self.denied:
            self.counters["hello_refused"] += 1
            raise BadRequest("this node does not link with yours (operator's deny list)")
        if peer_id == self.identity.node_id:
            self.counters["hello_refused"] += 1
            raise BadRequest("hello from our own id: a node does not link to itself")
        try:
            verify_hello(self.identity.node_id, nonce, peer_id, sig)
        except RecordError as e:
            self.counters["hello_refused"] += 1
            raise BadRequest(f"hello refused: {e.msg}") from None
        conn.peer_id = peer_id
        self.counters["hello_ok"] += 1
        record = args.get("record")
        if record is not None:
            self.on_record(peer_id, record)
        return {"record": self.own_record().wire}

    async def ping(self, frame, conn, now_ms):
        args = args_of(frame)
        tester = need_bytes(args, "tester", 32)
        nonce = need_bytes(args, "nonce", 32)
        if tester in self.denied or conn.peer_id in self.denied:
            raise BadRequest("this node does not answer yours (operator's deny list)")
        self.counters["pings_answered"] += 1
        return {"sig": sign_ping(self.identity.signing_key, tester, nonce),
                "record": self.own_record().wire}  # fmt: skip


# -- client side --------------------------------------------------------------------------------


def authenticated_connect(identity, own_record, *, on_record=None, connect=client_connect):
    """A ``connect(host, port, node_id, timeout=, clock_ms=)`` context manager (the shape of
    ``firmware.client.connect``) whose links have done challenge + hello: usable by any pool.
    ``on_record(node_id, wire)`` gets the record the server answers hello with."""

    @asynccontextmanager
    async def _connect(host, port, node_id, *, timeout=10.0, **kw):
        async with connect(host, port, node_id, timeout=timeout, **kw) as client:
            with trio.fail_after(timeout):
                ch = await client.request("challenge", {})
                nonce = ch.get("nonce")
                if type(nonce) is not bytes or len(nonce) != 32:
                    raise ConnectionError(f"{host}:{port}: challenge without a 32-byte nonce")
                ok = await client.request("hello", {
                    "node_id": identity.node_id,
                    "sig": sign_hello(identity.signing_key, node_id, nonce),
                    "record": own_record().wire,
                })  # fmt: skip
            if on_record is not None and ok.get("record") is not None:
                on_record(node_id, ok["record"])
            yield client

    return _connect


class _Link:
    __slots__ = ("client", "scope", "last_used")

    def __init__(self, client, scope):
        self.client = client
        self.scope = scope
        self.last_used = trio.current_time()

    @property
    def broken(self):
        return getattr(self.client, "_broken", None) is not None


class PeerLinks(IdleClosingPool):
    """Outbound authenticated links, one per (peer id, address), opened on first use.

    ``await links.request(node_id, (host, port), op, args)`` returns the ok map, raises the
    peer's ProtocolError, or PeerUnavailable (connect failed, link broke, timeout: the link is
    dropped and the next request reconnects). Links idle for ``idle_s`` are closed.
    """

    def __init__(self, connect, *, timeout=5.0, idle_s=60.0, max_links=128):
        self._connect = connect
        self.timeout = timeout
        self.idle_s = idle_s
        self.max_links = max_links
        self._links = {}
        self._locks = {}
        self._nursery = None
        self.counters = {"opened": 0, "failed": 0, "closed_idle": 0}

    def open_count(self):
        return len(self._links)

    def _close_idle(self, force_one=False):
        now = trio.current_time()
        items = sorted(self._links.items(), key=lambda kv: kv[1].last_used)
        for key, link in items:
            if link.broken or now - link.last_used > self.idle_s or force_one:
                self._drop(key, link)
                self.counters["closed_idle"] += 1
                force_one = False

    def _drop(self, key, link):
        if self._links.get(key) is link:
            del self._links[key]
        link.scope.cancel()

    async def _hold(self, key, task_status):
        node_id, (host, port) = key
        started = False
        try:
            async with self._connect(host, port, node_id, timeout=self.timeout) as client:
                link = _Link(client, trio.CancelScope())
                task_status.started(link)
                started = True
                with link.scope:
                    await trio.sleep_forever()
        except Exception:
            if not started:
                raise  # the caller of _link gets it as PeerUnavailable
            # after start a failing close must not take the pool (and the node) down

    async def _link(self, node_id, address):
        key = (node_id, tuple(address))
        link = self._links.get(key)
        if link is not None and not link.broken:
            return key, link
        if self._nursery is None:
            raise RuntimeError("PeerLinks.run is not running")
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            link = self._links.get(key)
            if link is not None and link.broken:
                self._drop(key, link)
                link = None
            if link is None:
                if len(self._links) >= self.max_links:
                    self._close_idle(force_one=True)
                try:
                    with trio.fail_after(self.timeout):
                        link = await self._nursery.start(self._hold, key)
                except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError,
                        ProtocolError) as e:  # fmt: skip
                    self.counters["failed"] += 1
                    raise PeerUnavailable(
                        f"{address[0]}:{address[1]} ({node_id[:4].hex()}): "
                        f"{type(e).__name__}: {e}") from None  # fmt: skip
                finally:
                    if not lock.statistics().tasks_waiting:
                        self._locks.pop(key, None)
                self.counters["opened"] += 1
                self._links[key] = link
        return key, link

    async def request(self, node_id, address, op, args, *, timeout=None):
        key, link = await self._link(node_id, address)
        link.last_used = trio.current_time()
        try:
            with trio.fail_after(timeout or self.timeout):
                return await link.client.request(op, args)
        except (ConnectionError, trio.TooSlowError, trio.BrokenResourceError,
                trio.ClosedResourceError) as e:  # fmt: skip
            self._drop(key, link)
            raise PeerUnavailable(f"{op} to {node_id[:4].hex()}: {type(e).__name__}: {e}") from None


async def ping(identity, record, *, timeout=5.0, connect=client_connect, rand=os.urandom):
    """Reachability test: a fresh link to the record's address, a signed answer from its key.

    True only if the TLS key and the signature both match ``record.id``; never raises for
    network trouble (that is the answer "unreachable").
    """
    address = record.address
    if address is None:
        return False
    nonce = rand(32)
    try:
        with trio.fail_after(timeout):
            async with connect(address[0], address[1], record.id, timeout=timeout) as client:
                ok = await client.request("ping", {"tester": identity.node_id, "nonce": nonce})
        verify_ping(identity.node_id, nonce, record.id, ok.get("sig"))
        return True
    except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError,
            trio.ClosedResourceError, ProtocolError, RecordError):  # fmt: skip
        return False
