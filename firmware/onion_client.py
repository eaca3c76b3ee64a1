"""Client library over onions: store / retrieve / delete through 3-hop paths, with retries.

    async with open_onion_client(nodes) as oc:          # nodes: [Hop(node_id, host, port)]
        r = await oc.store(recipient, seal_for(recipient, b"hi"))
        msgs = await oc.retrieve_all(my_signing_key)

Why a separate module: ``firmware.client`` is one pinned link to one node (the node engineer's);
this composes it (through ``LinkPool``) with ``firmware.proto.onion`` so that no single node
learns both who asks and what is asked for:

- the first hop sees the client's address, not the request;
- the final hop sees the request (recipient, namespace), not the client;
- middle hops see neither.

Path choice: the final hop is a member of the recipient's swarm (rendezvous placement over the
known nodes, so the request lands where the mail lives); the other hops are drawn at random from
the nodes outside that swarm (when there are enough), all distinct. A hop that fails (unreachable, busy, timeout, rejected) is avoided for
``penalty_s`` and the request is rebuilt with fresh keys on another path, up to ``attempts``
times. Store and delete are idempotent (messages dedupe by hash), so a retry is safe.

Bootstrap (``bootstrap``): ask any node for the node records it holds (op ``records``, served
by the membership service) and keep the verified ones flagged live.
"""

import dataclasses
import os
import random
from contextlib import asynccontextmanager

import trio

from firmware.client import PagedRetrieve, connect, wall_ms
from firmware.net.forward_links import LinkPool
from firmware.proto import onion
from firmware.proto.errors import BadResponse, Busy, ProtocolError, RateLimited
from firmware.proto.hashing import sign_request
from firmware.proto.limits import PROTOCOL_VERSION, PUBLIC_NS
from firmware.proto.placement import DEFAULT_K, rank
from firmware.proto.records import FLAG_RELAYED, RecordError, verify_record
from firmware.proto.responses import Err, parse_response

__all__ = ["OnionClient", "open_onion_client", "NoPath", "hops_from_records", "bootstrap",
           "run_via_onion"]

RETRYABLE_NEXT_CODES = {"unreachable", "timeout", "busy", "bad_request", "rate_limited",
                        "bad_response", "internal"}


class NoPath(ConnectionError):
    """Not enough usable nodes to build a path, or every attempt failed."""


class _Log:
    def debug(self, *a, **k):
        pass

    info = warning = error = debug

    def enabled(self, level):
        return False


class OnionClient(PagedRetrieve):
    def __init__(self, nodes, links: LinkPool, *, hops=3, attempts=4, timeout=15.0,
                 penalty_s=60.0, swarm_k=DEFAULT_K, final_choices=None, clock_ms=wall_ms,
                 rng=None, rand=os.urandom):
        # convert each node id to its X25519 onion key once, not per onion
        self.nodes = {n.node_id: n if n.x25519_pub else dataclasses.replace(
            n, x25519_pub=onion.x25519_public_of(n.node_id)) for n in nodes}
        self.links = links
        self.hops = hops
        self.attempts = attempts
        self.timeout = timeout
        self.penalty_s = penalty_s
        self.swarm_k = swarm_k
        # how many of the swarm's top members may serve as final hop (None: all k). Without
        # replication between swarm members only the top one holds everything.
        self.final_choices = final_choices
        self.clock_ms = clock_ms
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

    def choose_path(self, recipient: bytes | None):
        """``hops`` distinct usable nodes; the last one from ``recipient``'s swarm if given."""
        usable = self._usable()
        if len(usable) < self.hops:
            usable = list(self.nodes.values())  # everyone penalised: try anyway
        if len(usable) < self.hops:
            raise NoPath(f"an onion path needs {self.hops} distinct nodes, only {len(usable)} "
                         "known; bootstrap from a node that knows the network")
        if recipient is None:
            path = self.rng.sample(usable, self.hops)
            return self._direct_first(path, usable)
        swarm = rank(list(self.nodes), recipient, self.swarm_k)
        if self.final_choices:
            swarm = swarm[: self.final_choices]
        usable_ids = {n.node_id for n in usable}
        finals = [nid for nid in swarm if nid in usable_ids] or list(swarm)
        final = self.nodes[self.rng.choice(finals)]
        # other hops from outside the swarm when we can: a swarm member as first hop would see
        # both the client's address and (as a replica) the recipient of what it relays
        full_swarm = set(rank(list(self.nodes), recipient, self.swarm_k))
        rest = [n for n in usable if n.node_id not in full_swarm]
        if len(rest) < self.hops - 1:
            rest = [n for n in usable if n.node_id != final.node_id]
        if len(rest) < self.hops - 1:
            rest = [n for n in self.nodes.values() if n.node_id != final.node_id]
        return self._direct_first(self.rng.sample(rest, self.hops - 1) + [final], rest)

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

    async def request(self, op: str, args: dict, *, recipient: bytes | None = None) -> dict:
        """Run one storage request through an onion: its typed result (as NodeClient.request
        gives: StoreResult, RetrieveResult, ...) or the node's error raised.

        Retries on another path when a hop fails; errors of the request itself (bad signature,
        full, ...) are raised at once.
        """
        self.counters["requests"] += 1
        last = None
        for attempt in range(self.attempts):
            if attempt:
                self.counters["retries"] += 1
            path = self.choose_path(recipient)
            self.last_path = path
            self.counters["attempts"] += 1
            try:
                response = await self._once(path, op, args)
            except onion.HopFailed as e:
                # hop e.index could not use hop e.index + 1: avoid the latter
                self.penalise(path[e.index + 1].node_id)
                last = e
                continue
            except (Busy, RateLimited, onion.OnionResponseError, BadResponse) as e:
                self.penalise(path[0].node_id)
                last = e
                continue
            except ProtocolError as e:
                if e.code == "bad_request" and onion.is_rejection(e.code, e.msg):
                    self.penalise(path[0].node_id)  # stale keys for it, or a clock problem
                    last = e
                    continue
                raise
            except (ConnectionError, OSError, trio.TooSlowError) as e:
                self.penalise(path[0].node_id)
                last = e
                continue
            parsed = parse_response(response, op)  # BadResponse if the final hop is broken
            if isinstance(parsed, Err):
                if parsed.code in ("busy", "rate_limited") and attempt + 1 < self.attempts:
                    self.penalise(path[-1].node_id)
                    last = parsed.exception()
                    continue
                raise parsed.exception()
            return parsed.result
        raise NoPath(f"{op} failed on {self.attempts} paths; last error: {last}")

    async def _once(self, path, op, args) -> dict:
        frame = {"v": PROTOCOL_VERSION, "id": 0, "op": op, "args": args}
        blob, keys = onion.build_onion(path, onion_encode(frame), self.clock_ms(), self.rand)
        first = path[0]
        with trio.fail_after(self.timeout):
            link = await self.links.get(first.node_id, first.host, first.port)
            ok = await link.request("onion", {"blob": blob, "pos": 0})
        sealed = ok.get("blob")
        if type(sealed) is not bytes:
            raise BadResponse("the first hop answered without a blob")
        return onion.unwrap_response(keys, sealed)

    # -- storage API (same shapes as firmware.client.NodeClient) ----------------------------

    def _sig(self, signing_key, op, recipient, ns) -> dict:
        sig_ts = self.clock_ms()
        return {"sig_ts": sig_ts, "sig": sign_request(signing_key, op, recipient, ns, sig_ts)}

    async def store(self, recipient: bytes, data: bytes, *, ns: int = PUBLIC_NS,
                    ttl_ms: int = 86_400_000, ts: int | None = None, signing_key=None):
        """A StoreResult (.hash, .new, .expiry)."""
        args = {"recipient": recipient, "ns": ns, "ts": self.clock_ms() if ts is None else ts,
                "ttl": ttl_ms, "data": data}
        if ns != PUBLIC_NS:
            if signing_key is None:
                raise ValueError(f"storing in namespace {ns} needs the recipient's signing key")
            args.update(self._sig(signing_key, "store", recipient, ns))
        return await self.request("store", args, recipient=recipient)

    async def retrieve(self, signing_key, *, ns: int = PUBLIC_NS, after: bytes | None = None,
                       max_count: int = 100, max_bytes: int = 900_000):
        recipient = bytes(signing_key.verify_key)
        args = {"recipient": recipient, "ns": ns, "after": after, "max_count": max_count,
                "max_bytes": max_bytes, **self._sig(signing_key, "retrieve", recipient, ns)}
        r = await self.request("retrieve", args, recipient=recipient)
        return r.messages, r.more

    async def delete(self, signing_key, hashes, *, ns: int = PUBLIC_NS) -> list:
        recipient = bytes(signing_key.verify_key)
        r = await self.request("delete", {"recipient": recipient, "ns": ns,
                                          "hashes": list(hashes),
                                          **self._sig(signing_key, "delete", recipient, ns)},
                               recipient=recipient)
        return r.deleted

    async def info(self) -> dict:
        """``info`` map of a random final hop, through an onion (a probe of a path)."""
        return (await self.request("info", {})).to_map()


def onion_encode(frame: dict) -> bytes:
    from firmware.proto.codec import encode_map

    return encode_map(frame)


def hops_from_records(records) -> list[onion.Hop]:
    """Onion hops from verified node records (``firmware.proto.records.NodeRecord``)."""
    return [onion.Hop(r.id, r.addrs[0], r.port, relayed=bool(r.flags & FLAG_RELAYED))
            for r in records if r.addrs]


async def bootstrap(host, port, node_id, *, timeout=10.0, clock_ms=wall_ms) -> list[onion.Hop]:
    """Ask one node (pinned) for the live node records; keep those that verify."""
    result = None
    async with connect(host, port, node_id, timeout=timeout, clock_ms=clock_ms) as c:
        try:
            with trio.fail_after(timeout):
                result = await c.request("nodes", {})
        except ProtocolError as e:  # keep it out of connect's nursery (no exception group)
            result = e
    if isinstance(result, Exception):
        raise result
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
async def open_onion_client(nodes, *, log=None, connect_timeout=5.0, **kw):
    """An :class:`OnionClient` with its own link pool, closed on exit."""
    links = LinkPool(log=log or _Log(), connect_timeout=connect_timeout)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(links.run)
            try:
                yield OnionClient(nodes, links, **kw)
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the caller's own error, not a group of one
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
