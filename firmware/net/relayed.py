"""Relayed nodes: reaching them (any node) and being one (a node nobody can connect to).

Reaching: `RelayRoutes.link_to(node_id)` is what a link pool asks before connecting: a relayed
node attached to our own hub is reached through the hub; another relayed node through one of the
relays its signed record names (`relay_forward`). `RelayRoutes.ping` is membership's
reachability test for relayed records.

Being one: `RelayedMode` keeps `relay_poll` requests open at a few reachable peers; each poll's
answer carries work addressed to us (an onion, a storage request, a ping), which we run through
our own pipeline and answer with `relay_reply`. Reachability starts and stops it.
"""

import os

import trio

from firmware.link import Link, LinkDown
from firmware.logs import short_id as short
from firmware.proto.errors import BadRequest, ProtocolError
from firmware.proto.records import FLAG_RELAYED, RecordError, verify_ping
from firmware.serve.pipeline import ConnInfo, error_map

from .relay_hub import FORWARDABLE, POLL_WAIT

__all__ = ["RelayRoutes", "RelayedLink", "RelayedMode"]


class RelayedLink(Link):
    """A link to a relayed node through one of its relays (`relay_forward` on our peer link)."""

    def __init__(self, pool, relay_id, relay_addr, target):
        self.pool, self.relay_id, self.relay_addr, self.target = pool, relay_id, relay_addr, target

    async def request(self, op, args, *, timeout=None):
        return await self.pool.request(self.relay_id, self.relay_addr, "relay_forward",
                                       {"to": self.target, "op": op, "args": args},
                                       timeout=timeout)


class RelayRoutes:
    """Links to relayed nodes, for the link pools' `routes` and for membership's tests."""

    def __init__(self, hub, peer_pool, roster):
        self.hub, self.peer_pool, self.roster = hub, peer_pool, roster

    def link_to(self, node_id: bytes) -> Link | None:
        """A link that needs no connection of ours, or None to connect directly."""
        attached = self.hub.lookup(node_id)
        if attached is not None:
            return attached
        rec = self.roster.get(node_id)
        if rec is None or not rec.flags & FLAG_RELAYED:
            return None
        for relay in rec.relays:
            address = self.roster.address_of(relay)
            if address is not None:
                return RelayedLink(self.peer_pool, relay, address, node_id)
        return None

    async def ping(self, identity, record, *, timeout=5.0) -> bool:
        """Reachability test of a relayed record, through its relay (or our hub)."""
        link = self.link_to(record.id)
        if link is None:
            return False
        nonce = os.urandom(32)
        try:
            with trio.fail_after(timeout):
                ok = await link.request("ping", {"tester": identity.node_id, "nonce": nonce})
            verify_ping(identity.node_id, nonce, record.id, ok.get("sig"))
            return True
        except (ConnectionError, OSError, ProtocolError, RecordError, trio.TooSlowError):
            return False


class RelayedMode:
    """The relayed node's side: poll `relays` for work, run it with `respond`, reply."""

    def __init__(self, peer_pool, respond, *, clock_ms, log, polls_per_relay=4, own_record=None):
        """`own_record()` -> our current record, sent with every poll (the relay checks the
        address it names against the one we connect from)."""
        self.pool = peer_pool
        self.own_record = own_record
        self.respond = respond  # (frame, conn, now_ms) -> response map: the node's pipeline
        self.clock_ms = clock_ms
        self.log = log
        self.polls_per_relay = polls_per_relay
        self.relays: list[bytes] = []
        self.last_ok: dict[bytes, float] = {}  # relay id -> last successful poll (trio time)
        self._scope: trio.CancelScope | None = None
        self._nursery = None
        self.served = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def healthy(self, now: float) -> bool:
        return bool(self.relays) and all(now - self.last_ok.get(r, now) < 3 * POLL_WAIT
                                         for r in self.relays)

    def start(self, chosen) -> None:
        """Poll `chosen` [(relay id, address)...] from now on (replacing any earlier choice)."""
        self.stop()
        if not chosen or self._nursery is None:
            return
        self.relays = [nid for nid, _ in chosen]
        now = trio.current_time()
        for nid in self.relays:
            self.last_ok.setdefault(nid, now)
        scope = self._scope = trio.CancelScope()

        async def keep():
            with scope:
                async with trio.open_nursery() as n:
                    for nid, addr in chosen:
                        for _ in range(self.polls_per_relay):
                            n.start_soon(self._poll_loop, nid, addr)

        self._nursery.start_soon(keep)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        self.relays = []

    async def _poll_loop(self, nid, addr):
        backoff = 1.0
        while True:
            try:
                args = {"record": self.own_record().wire} if self.own_record else {}
                ok = await self.pool.request(nid, addr, "relay_poll", args,
                                             timeout=POLL_WAIT + 10)
                backoff = 1.0
                self.last_ok[nid] = trio.current_time()
            except (LinkDown, ProtocolError) as e:
                refused = isinstance(e, BadRequest)  # the relay refuses us: worth a look
                (self.log.warning if refused else self.log.debug)(
                    "relay_poll_failed", relay=short(nid), error=str(e)[:300])
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            for job in ok.get("jobs") or []:
                if isinstance(job, dict) and type(job.get("token")) is int:
                    try:
                        await self._serve(nid, addr, job)
                    except Exception as e:  # one bad job must not stop relaying
                        self.log.error("relay_job_failed", error=f"{type(e).__name__}: {e}")

    async def _serve(self, nid, addr, job):
        frame = job.get("frame")
        if not isinstance(frame, dict) or frame.get("op") not in FORWARDABLE:
            response = error_map(job["token"], "unknown_op",
                                 "only onions and storage requests are passed to relayed nodes")
        else:
            response = await self.respond(frame, ConnInfo(f"relay/{addr[0]}", 0), self.clock_ms())
        self.served += 1
        try:
            await self.pool.request(nid, addr, "relay_reply",
                                    {"token": job["token"], "response": response})
        except (LinkDown, ProtocolError) as e:
            self.log.debug("relay_reply_failed", relay=short(nid), error=str(e)[:200])
