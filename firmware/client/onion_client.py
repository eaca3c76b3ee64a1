"""Client library over onions: store / retrieve / delete through 3-hop paths, with retries.

    async with open_onion_client(nodes) as oc:          # nodes: [Hop(node_id, host, port)]
        r = await oc.store(recipient, seal_for(recipient, b"hi"))
        msgs = await oc.retrieve_all(my_signing_key)

Why a separate module: `NodeClient` is one pinned link to one node; this composes a link pool
with `firmware.proto.onion` so that no single node learns both who asks and what is asked for:

- the first hop sees the client's address, not the request;
- the final hop sees the request (recipient, namespace), not the client;
- middle hops see neither.

Path choice (firmware/proto/paths.py): the final hop is a member of the recipient's swarm
(placement over the known nodes' addresses, as the nodes compute it, so the request lands where
the mail lives); the other hops are drawn by network, outside that swarm, no two in one /16 (a
relayed node counting in its relays' networks too) and none in the client's own /16 when it is
known (``client_host``); small networks relax those rules in a fixed order (``last_level``). A
hop that fails (unreachable, busy, timeout, rejected) is avoided for `penalty_s` and the request
is rebuilt with fresh keys on another path, up to `attempts` times. Store and delete are
idempotent (messages dedupe by hash), so a retry is safe.

Sizes: every packet and answer has a fixed size class (firmware/proto/onion.py) that each hop
sees. The client waits longer than every hop's own forward timeout together
(``onion.client_timeout``), so a dead hop deep in the path is reported by its neighbour, not
mistaken for the first hop. A mailbox's ``retrieve`` pages grow a class at a time (``PAGES``):
the first fits the 4 KiB class, so an empty or small mailbox never moves a bigger answer
through every hop; a big mailbox's later pages, and a page whose first message is too big for
its class (answered ``too_large``), ask the next class.

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
from firmware.proto.errors import BadResponse, Busy, DataTooLarge, ProtocolError, RateLimited
from firmware.proto.limits import PROTOCOL_VERSION, PUBLIC_NS
from firmware.proto.paths import NoPath as _NoPathHere
from firmware.proto.paths import PathPicker
from firmware.proto.placement import DEFAULT_K, Member, Placement, address_nets
from firmware.proto.records import FLAG_RELAYED, RecordError, verify_record
from firmware.proto.responses import Err, parse_response

from .node_client import StorageCalls, connect

__all__ = ["OnionClient", "open_onion_client", "NoPath", "FinalHopFailed", "hops_from_records",
           "bootstrap", "run_via_onion", "member_of_hop", "PAGES"]

# retrieve pages as (max_bytes, max_count), smallest answer class first: a fetch starts in the
# 4 KiB class (like a store: an empty or small mailbox costs 4 KiB a hop back, not 80 or 1020),
# and each further page of a big mailbox - or a page whose first message does not fit - moves
# up a class (80 KiB holds any one message; 1020 KiB a full 900 KB page)
PAGES = ((3_000, 10), (60_000, 100), (900_000, 100))


class NoPath(ConnectionError):
    """Not enough usable nodes to build a path, or every attempt failed."""


class FinalHopFailed(NoPath):
    """The final hop a caller insisted on could not be used (retrieve_all moves to another)."""


def member_of_hop(hop) -> Member:
    """A hop as placement sees it: its own networks and its relays' (as a node's record)."""
    net16, net24 = address_nets(hop.host)
    nets16, nets24 = {net16}, {net24}
    for host in hop.relay_hosts:
        r16, r24 = address_nets(host)
        nets16.add(r16)
        nets24.add(r24)
    return Member(hop.node_id, net16, net24, frozenset(nets16), frozenset(nets24))


class OnionClient(StorageCalls):
    def __init__(self, nodes, pool: LinkPool, *, hops=3, attempts=4, timeout=None,
                 penalty_s=60.0, swarm_k=DEFAULT_K, final_choices=None, client_host=None,
                 clock_ms=wall_ms, rng=None, rand=os.urandom):
        """`timeout`: per onion (default `onion.client_timeout(hops)`); `client_host`: this
        client's own public address when known (no hop is drawn from its /16)."""
        # convert each node id to its X25519 onion key once, not per onion
        self.nodes = {n.node_id: n if n.x25519_pub else dataclasses.replace(
            n, x25519_pub=onion.x25519_public_of(n.node_id)) for n in nodes}
        self.placement = Placement([member_of_hop(n) for n in self.nodes.values()], k=swarm_k)
        self.pool = pool
        self.hops = hops
        self.attempts = attempts
        self.timeout = onion.client_timeout(hops) if timeout is None else timeout
        self.penalty_s = penalty_s
        self.swarm_k = swarm_k
        # how many of the swarm's top members may serve as final hop (None: all k)
        self.final_choices = final_choices
        self.client_host = client_host
        self._clock_ms = clock_ms
        self.rng = rng or random.SystemRandom()
        self.rand = rand
        self._penalised: dict[bytes, float] = {}
        self.last_path: list[onion.Hop] = []
        self.last_level = 0  # the path rules' relaxation level of the last path (0: all held)
        self.counters = {"requests": 0, "attempts": 0, "retries": 0}

    # -- paths ------------------------------------------------------------------------------

    def _usable(self):
        now = trio.current_time()
        return [n for nid, n in self.nodes.items() if self._penalised.get(nid, 0) <= now]

    def penalise(self, node_id: bytes):
        self._penalised[node_id] = trio.current_time() + self.penalty_s

    def swarm_of(self, recipient: bytes) -> list[bytes]:
        """The members of `recipient`'s swarm that may serve as its final hop, best first."""
        swarm = list(self.placement.swarm(recipient))
        return swarm[: self.final_choices] if self.final_choices else swarm

    def _finals(self, recipient, usable):
        """Swarm members to end a path at: usable ones, outside the client's /16 if any are."""
        usable_ids = {n.node_id for n in usable}
        swarm = [self.nodes[i] for i in self.swarm_of(recipient)]
        finals = [n for n in swarm if n.node_id in usable_ids] or swarm
        if self.client_host:
            mine = address_nets(self.client_host)[0]
            finals = [n for n in finals if mine not in member_of_hop(n).nets16] or finals
        return finals

    def _pick_final(self, recipient: bytes, usable) -> bytes:
        return self.rng.choice(self._finals(recipient, usable)).node_id

    def choose_path(self, recipient: bytes | None, final: bytes | None = None):
        """`hops` distinct usable nodes by the path rules; the last one `final`, else from
        `recipient`'s swarm (none given: any)."""
        usable = self._usable()
        if len(usable) < self.hops:
            usable = list(self.nodes.values())  # everyone penalised: try anyway
        if final is None and recipient is not None:
            final = self._pick_final(recipient, usable)  # as retrieve_all picks its member
        finals = [self.nodes[final]] if final is not None else []
        swarm = self.placement.swarm(recipient) if recipient is not None else ()
        try:
            path, self.last_level = PathPicker(usable).pick(
                hops=self.hops, finals=finals, swarm=swarm, client_host=self.client_host,
                rng=self.rng)  # fmt: skip
        except _NoPathHere as e:
            raise NoPath(str(e)) from None
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
            cursor, size = after, 0
            try:
                while True:
                    try:
                        msgs, more = await self._page(signing_key, ns, cursor, member, size)
                    except DataTooLarge:  # a message bigger than the page's class: ask bigger
                        if size + 1 == len(PAGES):
                            raise
                        size += 1
                        continue
                    for m in msgs:
                        if m.hash not in seen:
                            seen.add(m.hash)
                            out.append(m)
                    if not more or not msgs:
                        return out
                    cursor, size = msgs[-1].hash, min(size + 1, len(PAGES) - 1)
            except FinalHopFailed as e:
                last = e
        raise NoPath(f"no member of the swarm answered every page; last error: {last}")

    async def _page(self, signing_key, ns, after, member, size=0):
        recipient = bytes(signing_key.verify_key)
        max_bytes, max_count = PAGES[size]
        args = {"recipient": recipient, "ns": ns, "after": after, "max_count": max_count,
                "max_bytes": max_bytes, **self._sig(signing_key, "retrieve", recipient, ns)}
        r = await self.request("retrieve", args, recipient=recipient, final=member)
        return r.messages, r.more


def hops_from_records(records) -> list[onion.Hop]:
    """Onion hops from verified node records (``firmware.proto.records.NodeRecord``); a relayed
    node's relays are looked up among the same records (their networks count for it)."""
    records = [r for r in records if r.addrs]
    host_of = {r.id: r.addrs[0] for r in records}
    return [onion.Hop(r.id, r.addrs[0], r.port, relayed=bool(r.flags & FLAG_RELAYED),
                      relay_hosts=tuple(host_of[i] for i in r.relays if i in host_of))
            for r in records]  # fmt: skip


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
    # the local node's address is this box's: no hop from its /16 (a neighbour could watch both
    # ends); each onion gets the time every hop may take
    local = next((n.host for n in nodes if n.node_id == node_id), None)
    async with open_onion_client(nodes, hops=hops, client_host=local,
                                 timeout=max(timeout, onion.client_timeout(hops))) as oc:
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
