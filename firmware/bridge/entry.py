"""Clients through bridges: the bridge is the first hop of every onion, and the node records come
through it too, so a client in a censored network talks to nothing but the bridge's address.

    async with open_bridged_onion_client(["homenode-bridge://..."], timeout=15) as oc:
        await oc.store(recipient, seal_for(recipient, b"hi"))
        msgs = await oc.retrieve_all(my_signing_key)

Bridges are tried in the order given until one answers (TLS, pin, authenticator, then `info`
for its node id and `nodes` for the records); when none does, `NoBridge` says in one line what
each one did. Paths are [bridge, middle, final]: the bridge sees the client's address but not
the request, as any first hop (docs/bridge.md, "Clients").
"""

from contextlib import asynccontextmanager

import trio

from firmware.bridge.client import BridgeError, open_bridge_stream
from firmware.bridge.line import BridgeLine, parse_line
from firmware.client.onion_client import OnionClient, hops_from_records
from firmware.clock import wall_ms
from firmware.link import LinkDown, LinkPool, open_link
from firmware.proto import onion
from firmware.proto.errors import ProtocolError
from firmware.proto.records import RecordError, verify_record

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
                           open_tcp=trio.open_tcp_stream) -> tuple[bytes, list[onion.Hop]]:
    """(the bridge's node id, hops from the verified live records it passes on)."""
    stream = await open_bridge_stream(line, timeout=timeout, open_tcp=open_tcp)
    async with open_link(stream) as link:
        with trio.fail_after(timeout):
            info = await link.request("info", {}, timeout=timeout)
            nodes = await link.request("nodes", {}, timeout=timeout)
    node_id = info.get("node_id")
    if type(node_id) is not bytes or len(node_id) != 32:
        raise BridgeError(f"bridge {line.host}:{line.port} did not say its node id")
    now = clock_ms()
    good = []
    for wire in nodes.get("records") or []:
        try:
            rec = verify_record(wire, now)
        except (RecordError, ProtocolError, TypeError, ValueError):
            continue
        if rec.id != node_id:
            good.append(rec)
    return node_id, hops_from_records(good)


class BridgedOnionClient(OnionClient):
    """An OnionClient whose every path starts at `bridge` (a Hop); the other `hops - 1` hops
    are chosen as usual from `nodes`."""

    def __init__(self, bridge: onion.Hop, nodes, pool, *, hops: int = 3, **kw):
        super().__init__([n for n in nodes if n.node_id != bridge.node_id], pool,
                         hops=hops - 1, **kw)
        self.bridge = bridge

    def choose_path(self, recipient, final=None):
        return [self.bridge] + super().choose_path(recipient, final)

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
            node_id, nodes = await fetch_via_bridge(line, timeout=timeout, open_tcp=open_tcp)
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
                yield BridgedOnionClient(entry, nodes, pool, hops=hops, timeout=timeout, **kw)
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the caller's own error, not a group of one
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
