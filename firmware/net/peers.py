"""Node-to-node links: the in-band identity proof (hello), how a pool dials a peer, ping.

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

from firmware.link import LinkDown, open_link
from firmware.proto.errors import BadRequest, ProtocolError
from firmware.proto.records import RecordError, sign_hello, sign_ping, verify_hello, verify_ping

__all__ = ["args_of", "need_bytes", "require_peer", "PeerAuth", "authenticated_dial", "ping"]


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


def authenticated_dial(dialer, identity, own_record, *, on_record=None):
    """``dial`` for a LinkPool whose links have done challenge + hello. ``own_record()`` is
    sent along; ``on_record(node_id, wire)`` gets the record the server answers hello with."""

    @asynccontextmanager
    async def dial(node_id, host, port, timeout):
        stream = await dialer.open(host, port, node_id, timeout=timeout)
        async with open_link(stream) as link:
            ch = await link.request("challenge", {}, timeout=timeout)
            nonce = ch.get("nonce")
            if type(nonce) is not bytes or len(nonce) != 32:
                raise LinkDown(f"{host}:{port}: challenge without a 32-byte nonce")
            ok = await link.request("hello", {
                "node_id": identity.node_id,
                "sig": sign_hello(identity.signing_key, node_id, nonce),
                "record": own_record().wire,
            }, timeout=timeout)  # fmt: skip
            if on_record is not None and ok.get("record") is not None:
                on_record(node_id, ok["record"])
            yield link

    return dial


async def ping(dialer, identity, node_id, address, *, timeout=5.0, rand=os.urandom) -> bool:
    """Reachability test: a fresh link to `address`, a signed answer from `node_id`'s key.

    True only if the TLS key and the signature both match `node_id`; never raises for network
    trouble (that is the answer "unreachable").
    """
    nonce = rand(32)
    try:
        with trio.fail_after(timeout):
            stream = await dialer.open(address[0], address[1], node_id, timeout=timeout)
            async with open_link(stream) as link:
                ok = await link.request("ping", {"tester": identity.node_id, "nonce": nonce})
        verify_ping(identity.node_id, nonce, node_id, ok.get("sig"))
        return True
    except (OSError, ConnectionError, trio.TooSlowError, ProtocolError, RecordError):
        return False
