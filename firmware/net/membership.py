"""Membership service: push-pull gossip and reachability tests over the roster.

The decisions are all in ``firmware.proto.gossip.GossipState`` (pure) and the records live in
``firmware.net.roster.Roster``; this module only does the I/O:

- every ``gossip_interval`` (+/- 20 %) exchange digests with ``gossip_fanout`` random live peers
  (bootstrap candidates while we know nobody live, and one every 10th round so a restarted
  seed is found again): op ``gossip`` ``{have_hash}`` -> ``{same: true}`` when both hold the
  same records (the usual case: 16 bytes instead of the digest); else ``{have}`` ([id, seq]
  pairs) -> ``{records, want}``, then ``{push}`` with what the peer wanted;
- run the reachability tests GossipState hands out (a ``ping`` signed by the record's key over
  our pooled link to the advertised address; relayed records through ``relayed_ping``),
  report the outcomes, expire old records, re-issue our record at half its lifetime.

Bootstrap candidates: ``[network] bootstrap``, plus what ``add_candidate`` is given (a release's
signed seed list, neighbours found on the LAN).
"""

import os
import random

import trio

from firmware.link import LinkDown
from firmware.logs import short_id as short
from firmware.proto.errors import BadRequest, ProtocolError
from firmware.proto.records import FLAG_RELAYED, RecordError, verify_ping

from .peers import args_of, require_peer
from .settings import parse_bootstrap

__all__ = ["MembershipService", "parse_bootstrap", "cfg_jitter"]


class MembershipService:
    def __init__(self, identity, cfg, roster, pool, *, relayed_ping, clock_ms, log, rng=None):
        """`cfg`: the [network] section; `pool`: authenticated peer links (a LinkPool);
        `relayed_ping(identity, record, timeout=) -> bool` tests a relayed record."""
        self.identity = identity
        self.cfg = cfg
        self.roster = roster
        self.pool = pool
        self.relayed_ping = relayed_ping
        self.clock_ms = clock_ms
        self.log = log
        self.rng = rng or random.Random()
        self.candidates = [b for b in map(parse_bootstrap, cfg.bootstrap)
                           if b[2] not in roster.denied and b[2] != identity.node_id]
        self.counters = {"gossip_rounds": 0, "gossip_failed": 0, "gossip_same": 0, "tests_ok": 0,
                         "tests_failed": 0}  # fmt: skip
        self._rounds = 0
        self._last_alone_warning = -(10**18)

    def add_candidate(self, host: str, port: int, node_id: bytes) -> bool:
        """Someone to ask for the member list (a seed, a LAN neighbour). False if known/refused."""
        entry = (host, port, node_id)
        if node_id == self.identity.node_id or node_id in self.roster.denied or (
                entry in self.candidates):
            return False
        self.candidates.append(entry)
        return True

    # -- server op ------------------------------------------------------------------------------

    async def op_gossip(self, frame, conn, now_ms):
        peer = require_peer(conn, "gossip")
        st = self.roster.state
        args = args_of(frame)
        push, have = args.get("push", []), args.get("have")
        if type(push) is not list:
            raise BadRequest("must be a list of records", field="push")
        res = self.roster.merge(peer, push, now_ms)
        have_hash = args.get("have_hash")
        if have_hash is not None and have_hash == st.digest_hash():
            return {"records": [], "want": [], "accepted": len(res.accepted), "same": True}
        if have is None:
            return {"records": [], "want": [], "accepted": len(res.accepted), "same": False}
        if type(have) is not list:
            raise BadRequest("must be a list of [node id, seq] pairs", field="have")
        limit = args.get("limit")
        if type(limit) is not int or not 1 <= limit <= self.cfg.max_push:
            limit = self.cfg.max_push
        send, want = st.answer(have, limit=limit)
        return {"records": send, "want": want, "accepted": len(res.accepted), "same": False}

    # -- service --------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        own = self.roster.own()
        self.log.info("network_start", k=self.cfg.k, bootstrap=len(self.candidates),
                      record=f"{own.addrs[0]}:{own.port}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._test_loop, nursery)
            nursery.start_soon(self._gossip_loop)
            task_status.started()

    async def _gossip_loop(self):
        st = self.roster.state
        while True:
            self._rounds += 1
            peers = []
            for node_id in st.pick_peers(self.cfg.gossip_fanout):
                rec = st.get(node_id)
                if rec is not None and rec.address is not None:
                    peers.append((node_id, rec.address))
            alone = not peers
            if self.candidates and (alone or self._rounds % 10 == 1):
                host, port, node_id = self.rng.choice(self.candidates)
                peers.append((node_id, (host, port)))
            async with trio.open_nursery() as round_:
                for node_id, address in dict(peers).items():
                    round_.start_soon(self._exchange, node_id, address, alone)
            self.counters["gossip_rounds"] += 1
            await trio.sleep(cfg_jitter(self.cfg.gossip_interval, self.rng))

    async def _exchange(self, node_id, address, alone=False):
        st = self.roster.state
        try:
            ok = await self.pool.request(node_id, address, "gossip",
                                         {"have_hash": st.digest_hash()})
            if ok.get("same") is True:
                self.counters["gossip_same"] += 1
                return
            ok = await self.pool.request(node_id, address, "gossip",
                                         {"have": st.digest(), "limit": self.cfg.max_push})
            records = ok.get("records")
            if type(records) is list:  # we asked for these: extra ones are cut, not penalized
                self.roster.merge(node_id, records[: self.cfg.max_push], self.clock_ms())
            want = ok.get("want")
            if type(want) is list and want:
                wanted = [w for w in want[: self.cfg.max_push] if type(w) is bytes]
                await self.pool.request(node_id, address, "gossip", {"push": st.wires(wanted)})
        except (LinkDown, ProtocolError) as e:
            self.counters["gossip_failed"] += 1
            self.log.debug("gossip_failed", peer=short(node_id), error=str(e)[:200])
            now = self.clock_ms()
            if alone and now - self._last_alone_warning >= 60_000:  # the operator must act
                self._last_alone_warning = now
                self.log.warning("bootstrap_failed", peer=f"{address[0]}:{address[1]}",
                                 error=str(e)[:300], hint="no other node reachable yet; check "
                                 "[network] bootstrap (HOST:PORT@NODEID) and the network")  # fmt: skip
        except Exception as e:  # a peer's bad answer costs one exchange, never the service
            self.counters["gossip_failed"] += 1
            self.log.warning("gossip_error", peer=short(node_id),
                             error=f"{type(e).__name__}: {e}"[:200])

    async def _test_loop(self, nursery):
        st = self.roster.state
        while True:
            now = self.clock_ms()
            try:
                self.roster.handle(st.expire(now))
                own = st.own
                if now >= own.issued + (own.expires - own.issued) // 2:
                    self.roster.reissue()
                for rec in st.due_tests(now):
                    nursery.start_soon(self._test, rec)
                nxt = st.next_test_at()
            except Exception as e:  # a bug costs one pass, never the node
                self.log.error("membership_bug", error=f"{type(e).__name__}: {e}"[:300])
                nxt = None
            wait_ms = 1000 if nxt is None else min(1000, max(20, nxt - now))
            await trio.sleep(wait_ms / 1000)

    async def _ping_pooled(self, rec):
        """A reachability test over our pooled link to the record's address: the first test
        opens it (TCP + TLS pinned to the id + hello: the address really reaches the key),
        later ones reuse it, so a re-test costs one signed answer instead of a TLS handshake.
        A broken link is dropped and the next test connects afresh."""
        nonce = os.urandom(32)
        try:
            ok = await self.pool.request(rec.id, rec.address, "ping",
                                         {"tester": self.identity.node_id, "nonce": nonce},
                                         timeout=self.cfg.test_timeout)  # fmt: skip
            verify_ping(self.identity.node_id, nonce, rec.id, ok.get("sig"))
            return True
        except (LinkDown, ProtocolError, RecordError):
            return False

    async def _test(self, rec):
        try:
            if rec.address is not None and not rec.flags & FLAG_RELAYED:
                ok = await self._ping_pooled(rec)
            else:  # relayed records: reached through one of their relays
                ok = await self.relayed_ping(self.identity, rec, timeout=self.cfg.test_timeout)
        except Exception as e:  # a pinger bug counts as a failed test
            self.log.error("reachability_bug", error=f"{type(e).__name__}: {e}"[:300])
            ok = False
        self.counters["tests_ok" if ok else "tests_failed"] += 1
        if not ok:
            self.log.debug("reachability_failed", peer=short(rec.id),
                           address=f"{rec.address[0]}:{rec.address[1]}" if rec.address else None)
        self.roster.handle(self.roster.state.test_result(rec, ok, self.clock_ms()))

    # -- metrics ------------------------------------------------------------------------------------

    def info(self):
        c = self.counters
        return {**self.roster.info(), "gossip_rounds": c["gossip_rounds"],
                "gossip_failed": c["gossip_failed"], "reachability_ok": c["tests_ok"],
                "reachability_failed": c["tests_failed"], "bootstrap_candidates": len(self.candidates)}


def cfg_jitter(seconds, rng, spread=0.2):
    return seconds * (1 + spread * (2 * rng.random() - 1))
