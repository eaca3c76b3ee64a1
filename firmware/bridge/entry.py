"""Clients through bridges: the bridge is the first hop of every onion, and the node records come
through it too, so a client in a censored network talks to nothing but the bridge's address.

    async with open_bridged_onion_client(["homenode-bridge://..."], timeout=15) as oc:
        await oc.store(recipient, seal_for(recipient, b"hi"))
        msgs = await oc.retrieve_all(my_signing_key)

Bridges are tried in the order given until one answers (TLS, pin, authenticator, then `info`
for its node id, `ping` for its signed record - which names its relays - and `nodes` for the
records); when none does, `NoBridge` says in one line what each one did. Paths are
[bridge, one of its relays, middle, final]: a bridge passes onions to its relays only (the node
after it must be one that knows its address already), and sees the client's address but not the
request, as any first hop (docs/bridge.md, "Clients").
"""

import os
from contextlib import asynccontextmanager

import trio

from firmware.bridge.client import BridgeError, open_bridge_stream
from firmware.bridge.line import BridgeLine, parse_line
from firmware.client.onion_client import NoPath, OnionClient, hops_from_records
from firmware.clock import wall_ms
from firmware.link import LinkDown, LinkPool, open_link
from firmware.proto import onion
from firmware.proto.errors import ProtocolError
from firmware.proto.records import RecordError, verify_ping, verify_record

__all__ = ["NoBridge", "bridge_dial", "fetch_via_bridge", "BridgedOnionClient",
           "open_bridged_onion_client"]


class NoBridge(ConnectionError):
    """None of the bridges given could be used; the message says what each one did."""


def bridge_dial(line: BridgeLine, node_id: bytes, *, open_tcp=trio.open_tcp_stream):
    """`dial` for a LinkPool: the bridge's node (`node_id`) is reached over its WebSocket tunnel;
    no other node is ever connected to."""

    @asynccontextmanager
    async def dial(want_id, host, port, timeout):
        if want_id != node_id:
            raise LinkDown("through a bridge the client connects to the bridge only")
        stream = await open_bridge_stream(line, timeout=timeout, open_tcp=open_tcp)
        async with open_link(stream) as link:
            yield link

    return dial


async def fetch_via_bridge(line: BridgeLine, *, timeout: float, clock_ms=wall_ms,
                           open_tcp=trio.open_tcp_stream):
    """(the bridge's node id, its relays' ids, hops from the verified live records it passes
    on). The relays come from the bridge's own signed record (its `ping` answer)."""
    where = f"bridge {line.host}:{line.port}"
    tester, nonce = os.urandom(32), os.urandom(32)
    stream = await open_bridge_stream(line, timeout=timeout, open_tcp=open_tcp)
    async with open_link(stream) as link:
        with trio.fail_after(timeout):
            info = await link.request("info", {}, timeout=timeout)
            pong = await link.request("ping", {"tester": tester, "nonce": nonce},
                                      timeout=timeout)
            nodes = await link.request("nodes", {}, timeout=timeout)
    node_id = info.get("node_id")
    if type(node_id) is not bytes or len(node_id) != 32:
        raise BridgeError(f"{where} did not say its node id")
    now = clock_ms()
    try:
        verify_ping(tester, nonce, node_id, pong.get("sig"))
        own = verify_record(pong.get("record"), now)
    except (RecordError, ProtocolError, TypeError, ValueError) as e:
        raise BridgeError(f"{where} sent no valid record of its own ({e})") from None
    if own.id != node_id or not own.relays:
        raise BridgeError(f"{where} names no relays in its record: it is not a bridge node")
    good = []
    for wire in nodes.get("records") or []:
        try:
            rec = verify_record(wire, now)
        except (RecordError, ProtocolError, TypeError, ValueError):
            continue
        if rec.id != node_id:
            good.append(rec)
    return node_id, tuple(own.relays), hops_from_records(good)


class BridgedOnionClient(OnionClient):
    """An OnionClient whose every path starts at `bridge` (a Hop), then one of `relays` (the
    bridge's relay ids), then `hops - 1` hops chosen as usual from `nodes` (when the first of
    those is a relay already, it is the second hop and the path is one shorter)."""

    def __init__(self, bridge: onion.Hop, relays, nodes, pool, *, hops: int = 3, **kw):
        super().__init__([n for n in nodes if n.node_id != bridge.node_id], pool,
                         hops=hops - 1, **kw)
        self.bridge = bridge
        self.relay_ids = frozenset(relays)

    def choose_path(self, recipient, final=None):
        rest = super().choose_path(recipient, final)
        if rest[0].node_id in self.relay_ids:
            return [self.bridge] + rest
        taken = {h.node_id for h in rest}
        relays = [self.nodes[r] for r in sorted(self.relay_ids) if r in self.nodes and
                  r not in taken and self._penalised.get(r, 0) <= trio.current_time()]
        relays = relays or [self.nodes[r] for r in sorted(self.relay_ids)
                            if r in self.nodes and r not in taken]
        if not relays:
            raise NoPath("none of the bridge's relays is among the live nodes it passed on; "
                         "try again in a minute, or another bridge")
        return [self.bridge, self.rng.choice(relays)] + rest

    def _direct_first(self, path, pool):
        return path  # the bridge is the first hop: the others are never connected to


@asynccontextmanager
async def open_bridged_onion_client(lines, *, timeout: float = 15.0, hops: int = 3,
                                    open_tcp=trio.open_tcp_stream, **kw):
    """A BridgedOnionClient through the first of `lines` (bridge lines, text or BridgeLine) that
    works; NoBridge when none does."""
    failures = []
    for text in lines:
        line = parse_line(text) if isinstance(text, str) else text
        try:
            node_id, relays, nodes = await fetch_via_bridge(line, timeout=timeout,
                                                            open_tcp=open_tcp)
        except (ConnectionError, OSError, ProtocolError, trio.TooSlowError) as e:
            failures.append(f"{line.host}:{line.port}: {e or type(e).__name__}")
            continue
        break
    else:
        raise NoBridge("no bridge works - " + "; ".join(failures) if failures
                       else "no bridge line given")
    entry = onion.Hop(node_id, line.host, line.port)
    pool = LinkPool(bridge_dial(line, node_id, open_tcp=open_tcp), connect_timeout=timeout,
                    idle_s=120.0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            try:
                yield BridgedOnionClient(entry, relays, nodes, pool, hops=hops, timeout=timeout,
                                         **kw)
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the caller's own error, not a group of one
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
