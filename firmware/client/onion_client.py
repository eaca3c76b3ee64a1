"""Client library over onions: store / retrieve / delete through 3-hop paths, with retries.

    async with open_onion_client(nodes) as oc:          # nodes: [Hop(node_id, host, port)]
        r = await oc.store(recipient, seal_for(recipient, b"hi"))
        msgs = await oc.retrieve_all(my_signing_key)

Why a separate module: `NodeClient` is one pinned link to one node; this composes a link pool
with `firmware.proto.onion` so that no single node learns both who asks and what is asked for:

- the first hop sees the client's address, not the request;
- the final hop sees the request (recipient, namespace), not the client;
- middle hops see neither.

Path choice: the final hop is a member of the recipient's swarm (rendezvous placement over the
known nodes, so the request lands where the mail lives); the other hops are drawn at random from
the nodes outside that swarm (when there are enough), all distinct. A hop that fails
(unreachable, busy, timeout, rejected) is avoided for `penalty_s` and the request is rebuilt
with fresh keys on another path, up to `attempts` times. Store and delete are idempotent
(messages dedupe by hash), so a retry is safe.

Paging: a `retrieve` page's `after` is a position in the answering member's own insertion
order, so `retrieve_all` asks every page of one walk of the same swarm member; if that member
fails mid-walk it starts again at another one and drops messages it already has.
"""

import dataclasses
import os
import random
from contextlib import asynccontextmanager

import trio

from firmware.clock import wall_ms
from firmware.link import Dialer, LinkPool, direct_dial
from firmware.proto import onion
from firmware.proto.codec import encode_map
from firmware.proto.errors import BadResponse, Busy, ProtocolError, RateLimited
from firmware.proto.limits import PROTOCOL_VERSION, PUBLIC_NS
from firmware.proto.placement import DEFAULT_K, rank
from firmware.proto.records import FLAG_RELAYED, RecordError, verify_record
from firmware.proto.responses import Err, parse_response

from .node_client import StorageCalls, connect

__all__ = ["OnionClient", "open_onion_client", "NoPath", "FinalHopFailed", "hops_from_records",
           "bootstrap", "run_via_onion"]


class NoPath(ConnectionError):
    """Not enough usable nodes to build a path, or every attempt failed."""


class FinalHopFailed(NoPath):
    """The final hop a caller insisted on could not be used (retrieve_all moves to another)."""


class OnionClient(StorageCalls):
    def __init__(self, nodes, pool: LinkPool, *, hops=3, attempts=4, timeout=15.0,
                 penalty_s=60.0, swarm_k=DEFAULT_K, final_choices=None, clock_ms=wall_ms,
                 rng=None, rand=os.urandom):
        # convert each node id to its X25519 onion key once, not per onion
        self.nodes = {n.node_id: n if n.x25519_pub else dataclasses.replace(
            n, x25519_pub=onion.x25519_public_of(n.node_id)) for n in nodes}
        self.pool = pool
        self.hops = hops
        self.attempts = attempts
        self.timeout = timeout
        self.penalty_s = penalty_s
        self.swarm_k = swarm_k
        # how many of the swarm's top members may serve as final hop (None: all k)
        self.final_choices = final_choices
        self._clock_ms = clock_ms
        self.rng = rng or random.SystemRandom()
        self.rand = rand
        self._penalised: dict[bytes, float] = {}
        self.last_path: list[onion.Hop] = []
        self.counters = {"requests": 0, "attempts": 0, "retries": 0}

    # -- paths ------------------------------------------------------------------------------

    def _usable(self):
        now = trio.current_time()
        return [n for nid, n in self.nodes.items() if self._penalised.get(nid, 0) <= now]

    def penalise(self, node_id: bytes):
        self._penalised[node_id] = trio.current_time() + self.penalty_s

    def swarm_of(self, recipient: bytes) -> list[bytes]:
        """The members of `recipient`'s swarm that may serve as its final hop, best first."""
        swarm = list(rank(list(self.nodes), recipient, self.swarm_k))
        return swarm[: self.final_choices] if self.final_choices else swarm

    def _pick_final(self, recipient: bytes, usable) -> bytes:
        usable_ids = {n.node_id for n in usable}
        swarm = self.swarm_of(recipient)
        return self.rng.choice([nid for nid in swarm if nid in usable_ids] or swarm)

    def choose_path(self, recipient: bytes | None, final: bytes | None = None):
        """`hops` distinct usable nodes; the last one `final`, else from `recipient`'s swarm."""
        usable = self._usable()
        if len(usable) < self.hops:
            usable = list(self.nodes.values())  # everyone penalised: try anyway
        if len(usable) < self.hops:
            raise NoPath(f"an onion path needs {self.hops} distinct nodes, only {len(usable)} "
                         "known; bootstrap from a node that knows the network")
        if recipient is None and final is None:
            path = self.rng.sample(usable, self.hops)
            return self._direct_first(path, usable)
        if final is None:
            final = self._pick_final(recipient, usable)
        # other hops from outside the swarm when we can: a swarm member as first hop would see
        # both the client's address and (as a replica) the recipient of what it relays
        full_swarm = set(rank(list(self.nodes), recipient, self.swarm_k)) if recipient else set()
        rest = [n for n in usable if n.node_id not in full_swarm and n.node_id != final]
        if len(rest) < self.hops - 1:
            rest = [n for n in usable if n.node_id != final]
        if len(rest) < self.hops - 1:
            rest = [n for n in self.nodes.values() if n.node_id != final]
        path = self.rng.sample(rest, self.hops - 1) + [self.nodes[final]]
        return self._direct_first(path, rest)

    def _direct_first(self, path, pool):
        """The client connects to the first hop itself: it must not be a relayed node."""
        if not path[0].relayed:
            return path
        for i, hop in enumerate(path[1:-1], 1):
            if not hop.relayed:
                path[0], path[i] = path[i], path[0]
                return path
        spare = [n for n in pool if not n.relayed and n not in path]
        if not spare:
            raise NoPath("every known node is relayed: none can be a first hop")
        path[0] = self.rng.choice(spare)
        return path

    # -- requests ---------------------------------------------------------------------------

    async def request(self, op: str, args: dict, *, recipient: bytes | None = None,
                      final: bytes | None = None):
        """Run one storage request through an onion: its typed result (as NodeClient.request
        gives: StoreResult, RetrieveResult, ...) or the node's error raised.

        Retries on another path when a hop fails; errors of the request itself (bad signature,
        full, ...) are raised at once. With `final`, every path ends there, and a failure of
        that hop raises FinalHopFailed instead of trying another final hop.
        """
        self.counters["requests"] += 1
        last = None
        for attempt in range(self.attempts):
            if attempt:
                self.counters["retries"] += 1
            path = self.choose_path(recipient, final)
            self.last_path = path
            self.counters["attempts"] += 1
            try:
                response = await self._once(path, op, args)
            except onion.HopFailed as e:
                # hop e.index could not use hop e.index + 1: avoid the latter
                failed = path[e.index + 1].node_id
                self.penalise(failed)
                if failed == final:
                    raise FinalHopFailed(f"the final hop failed: {e}") from None
                last = e
                continue
            except (Busy, RateLimited, onion.OnionResponseError, BadResponse,
                    onion.OnionRejected) as e:
                self.penalise(path[0].node_id)  # (a rejection: stale keys, or a clock problem)
                last = e
                continue
            except (ConnectionError, OSError, trio.TooSlowError) as e:
                self.penalise(path[0].node_id)
                last = e
                continue
            parsed = parse_response(response, op)  # BadResponse if the final hop is broken
            if isinstance(parsed, Err):
                if parsed.code in ("busy", "rate_limited") and attempt + 1 < self.attempts:
                    self.penalise(path[-1].node_id)
                    if path[-1].node_id == final:
                        raise FinalHopFailed(f"the final hop is {parsed.code}")
                    last = parsed.exception()
                    continue
                raise parsed.exception()
            return parsed.result
        if final is not None:
            raise FinalHopFailed(f"{op} failed on {self.attempts} paths; last error: {last}")
        raise NoPath(f"{op} failed on {self.attempts} paths; last error: {last}")

    async def _once(self, path, op, args) -> dict:
        frame = {"v": PROTOCOL_VERSION, "id": 0, "op": op, "args": args}
        blob, keys = onion.build_onion(path, encode_map(frame), self._clock_ms(), self.rand)
        first = path[0]
        with trio.fail_after(self.timeout):
            ok = await self.pool.request(first.node_id, (first.host, first.port), "onion",
                                         {"blob": blob}, timeout=self.timeout)
        sealed = ok.get("blob")
        if type(sealed) is not bytes:
            raise BadResponse("the first hop answered without a blob")
        return onion.unwrap_response(keys, sealed)

    async def retrieve_all(self, signing_key, *, ns: int = PUBLIC_NS, after=None) -> list:
        """Every message after `after`, each exactly once: all pages from one swarm member (a
        page's cursor is a position in that member's insertion order); if it fails mid-walk,
        the walk restarts at another member and skips messages already returned."""
        recipient = bytes(signing_key.verify_key)
        out, seen, last = [], set(), None
        first = self._pick_final(recipient, self._usable())  # as a single request would
        members = [first] + [m for m in self.swarm_of(recipient) if m != first]
        for member in members:
            cursor = after
            try:
                while True:
                    msgs, more = await self._page(signing_key, ns, cursor, member)
                    for m in msgs:
                        if m.hash not in seen:
                            seen.add(m.hash)
                            out.append(m)
                    if not more or not msgs:
                        return out
                    cursor = msgs[-1].hash
            except FinalHopFailed as e:
                last = e
        raise NoPath(f"no member of the swarm answered every page; last error: {last}")

    async def _page(self, signing_key, ns, after, member):
        recipient = bytes(signing_key.verify_key)
        args = {"recipient": recipient, "ns": ns, "after": after, "max_count": 100,
                "max_bytes": 900_000, **self._sig(signing_key, "retrieve", recipient, ns)}
        r = await self.request("retrieve", args, recipient=recipient, final=member)
        return r.messages, r.more


def hops_from_records(records) -> list[onion.Hop]:
    """Onion hops from verified node records (``firmware.proto.records.NodeRecord``)."""
    return [onion.Hop(r.id, r.addrs[0], r.port, relayed=bool(r.flags & FLAG_RELAYED))
            for r in records if r.addrs]


async def bootstrap(host, port, node_id, *, timeout=10.0, clock_ms=wall_ms,
                    dialer=None) -> list[onion.Hop]:
    """Ask one node (pinned) for the live node records; keep those that verify."""
    async with connect(host, port, node_id, timeout=timeout, clock_ms=clock_ms,
                       dialer=dialer) as c:
        with trio.fail_after(timeout):
            result = await c.request("nodes", {})
    now = clock_ms()
    good = []
    for wire in result.get("records") or []:
        try:
            good.append(verify_record(wire, now))
        except (RecordError, ProtocolError, TypeError, ValueError):
            continue
    return hops_from_records(good)


async def run_via_onion(host, port, node_id, fn, *, timeout=10.0, hops=3):
    """CLI helper: bootstrap from the local node; with enough nodes run ``await fn(client)``
    through onions and return (True, result), else (False, why not; None for a lone node)."""
    try:
        nodes = await bootstrap(host, port, node_id, timeout=timeout)
    except ProtocolError:
        return False, None  # a node without the network service: a lone mailbox
    if len(nodes) <= 1:
        return False, None
    if len(nodes) < hops:
        return False, (f"the node knows {len(nodes)} live node(s), an onion needs {hops}")
    async with open_onion_client(nodes, hops=hops, timeout=timeout) as oc:
        return True, await fn(oc)


@asynccontextmanager
async def open_onion_client(nodes, *, connect_timeout=5.0, dialer=None, **kw):
    """An :class:`OnionClient` with its own link pool, closed on exit."""
    pool = LinkPool(direct_dial(dialer or Dialer()), connect_timeout=connect_timeout,
                    idle_s=120.0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            try:
                yield OnionClient(nodes, pool, **kw)
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the caller's own error, not a group of one
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
