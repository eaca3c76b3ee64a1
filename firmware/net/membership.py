"""Membership service: our signed record, push-pull gossip, reachability tests, the live set.

The decisions are all in ``firmware.proto.gossip.GossipState`` (pure); this module does the I/O
around it and keeps ``placement`` (rendezvous swarms over the live set) up to date:

- at start, sign our record (address = ``advertise_host``/``advertise_port``, else where the
  listener is bound), re-issue it at half its lifetime;
- every ``gossip_interval`` (+/- 20 %) exchange digests with ``gossip_fanout`` random live peers
  (bootstrap peers while we know nobody live, and one bootstrap peer every 10th round so a
  restarted seed is found again): op ``gossip`` ``{have_hash}`` -> ``{same: true}`` when both
  hold the same records (the usual case: 16 bytes instead of the digest); else ``{have}``
  ([id, seq] pairs) -> ``{records, want}``, then ``{push}`` with what the peer wanted;
- run the reachability tests GossipState hands out (a ``ping`` signed by the record's key over
  our pooled link to the advertised address, opened afresh if there is none; relayed records go
  through ``pinger``, which the NAT work replaces), report the outcomes, expire old records;
- on every live-set change update placement and call the ``on_change`` listeners (replication
  hands data over).
"""

import hashlib
import os
import random

import trio

from firmware.proto.errors import BadRequest, Busy, ProtocolError
from firmware.proto.gossip import GossipState, NodeDown, NodeLive, OwnRecordSuperseded
from firmware.proto.placement import Placement
from firmware.proto.records import (
    FLAG_REACHABLE,
    FLAG_RELAYED,
    RecordError,
    address_allowed,
    make_record,
    verify_ping,
)

from .peers import PeerUnavailable, args_of, ping, require_peer
from .settings import parse_bootstrap

__all__ = ["MembershipService", "parse_bootstrap", "live_set_digest"]


def short(node_id):
    return node_id[:4].hex()


class MembershipService:
    def __init__(self, identity, cfg, *, links, clock_ms, log, version, address,
                 rng=None, pinger=ping):  # fmt: skip
        """``cfg`` is the [network] config section; ``address()`` -> the bound (host, port)."""
        self.identity = identity
        self.cfg = cfg
        self.links = links
        self.clock_ms = clock_ms
        self.log = log
        self.version = version
        self.address = address
        self.rng = rng or random.Random()
        self.pinger = pinger
        self.denied = frozenset(bytes.fromhex(e) for e in getattr(cfg, "deny", ()))
        self.bootstrap = [b for b in map(parse_bootstrap, cfg.bootstrap)
                          if b[2] not in self.denied]  # fmt: skip
        self.placement = Placement([identity.node_id], k=cfg.k)
        self.state = None  # GossipState, once run() knows our address
        self.on_change = []  # callables(placement), after every live-set change
        self.ready = trio.Event()
        self.counters = {"gossip_rounds": 0, "gossip_failed": 0, "gossip_same": 0, "tests_ok": 0,
                         "tests_failed": 0, "records_issued": 0}  # fmt: skip
        self._rounds = 0
        self._last_alone_warning = -(10**18)

    # -- our record ---------------------------------------------------------------------------

    def own_record(self):
        if self.state is None:
            raise Busy("the node is still starting its network service; retry in a moment")
        return self.state.own

    def _sign(self, seq, now, flags=FLAG_REACHABLE, relays=()):
        host, port = self.address()
        adv_host = self.cfg.advertise_host or host
        if adv_host in ("0.0.0.0", "::", ""):
            adv_host = "127.0.0.1"
        lifetime = int(self.cfg.record_lifetime * 1000)
        return make_record(self.identity.signing_key, seq=seq, addrs=[adv_host],
                           port=self.cfg.advertise_port or port, version=self.version,
                           flags=flags, relays=relays, issued=now, expires=now + lifetime)  # fmt: skip

    def reissue(self, *, flags=None, relays=None, min_seq=0):
        """Sign a new record (higher seq), e.g. when NAT status changes flags or relays."""
        now = self.clock_ms()
        own = self.state.own
        rec = self._sign(max(now, own.seq + 1, min_seq + 1), now,
                         own.flags if flags is None else flags,
                         own.relays if relays is None else relays)  # fmt: skip
        self.state.set_own(rec)
        self.counters["records_issued"] += 1
        return rec

    # -- events -------------------------------------------------------------------------------

    def _handle(self, events):
        changed = False
        for ev in events:
            if isinstance(ev, NodeLive):
                self.log.info("peer_live", peer=short(ev.node_id))
                changed = True
            elif isinstance(ev, NodeDown):
                self.log.info("peer_down", peer=short(ev.node_id))
                changed = True
            elif isinstance(ev, OwnRecordSuperseded):
                self.log.warning("own_record_superseded", seq=ev.seq)
                self.reissue(min_seq=ev.seq)
        if changed and self.placement.update(self.state.live_ids()):
            for fn in self.on_change:
                fn(self.placement)

    def on_record(self, peer_id, wire):
        """A record a peer sent with hello (either direction)."""
        if self.state is None:
            return
        res = self.state.merge(peer_id, [wire], self.clock_ms())
        self._handle(res.events)

    # -- server op ------------------------------------------------------------------------------

    async def op_gossip(self, frame, conn, now_ms):
        peer = require_peer(conn, "gossip")
        if self.state is None:
            raise Busy("network service starting")
        args = args_of(frame)
        push, have = args.get("push", []), args.get("have")
        if type(push) is not list:
            raise BadRequest("must be a list of records", field="push")
        res = self.state.merge(peer, push, now_ms)
        self._handle(res.events)
        have_hash = args.get("have_hash")
        if have_hash is not None and have_hash == self.state.digest_hash():
            return {"records": [], "want": [], "accepted": len(res.accepted), "same": True}
        if have is None:
            return {"records": [], "want": [], "accepted": len(res.accepted), "same": False}
        if type(have) is not list:
            raise BadRequest("must be a list of [node id, seq] pairs", field="have")
        limit = args.get("limit")
        if type(limit) is not int or not 1 <= limit <= self.cfg.max_push:
            limit = self.cfg.max_push
        send, want = self.state.answer(have, limit=limit)
        return {"records": send, "want": want, "accepted": len(res.accepted), "same": False}

    def install(self, handler):
        handler.add_op("gossip", self.op_gossip)

    # -- service --------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        now = self.clock_ms()
        cfg = self.cfg
        self.state = GossipState(
            self._sign(now, now), rng=self.rng,
            test_interval_ms=int(cfg.test_interval * 1000),
            max_backoff_ms=int(cfg.test_backoff_max * 1000),
            fail_threshold=cfg.fail_threshold, max_push=cfg.max_push,
            max_test_rate=cfg.max_test_rate,
            max_records=cfg.max_records, denied=self.denied,
            address_ok=lambda host: address_allowed(host, self.state.own.addrs[0]
                                                    if self.state.own.addrs else ""),
        )  # fmt: skip
        self.log.info("network_start", k=cfg.k, bootstrap=len(self.bootstrap),
                      record=f"{self.state.own.addrs[0]}:{self.state.own.port}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._test_loop, nursery)
            nursery.start_soon(self._gossip_loop)
            self.ready.set()
            task_status.started()

    async def _gossip_loop(self):
        while True:
            self._rounds += 1
            peers = []
            for node_id in self.state.pick_peers(self.cfg.gossip_fanout):
                rec = self.state.get(node_id)
                if rec is not None and rec.address is not None:
                    peers.append((node_id, rec.address))
            alone = not peers
            if self.bootstrap and (alone or self._rounds % 10 == 1):
                host, port, node_id = self.rng.choice(self.bootstrap)
                if node_id != self.identity.node_id:
                    peers.append((node_id, (host, port)))
            async with trio.open_nursery() as round_:
                for node_id, address in dict(peers).items():
                    round_.start_soon(self._exchange, node_id, address, alone)
            self.counters["gossip_rounds"] += 1
            delay = cfg_jitter(self.cfg.gossip_interval, self.rng)
            await trio.sleep(delay)

    async def _exchange(self, node_id, address, alone=False):
        try:
            ok = await self.links.request(node_id, address, "gossip",
                                          {"have_hash": self.state.digest_hash()})
            if ok.get("same") is True:
                self.counters["gossip_same"] += 1
                return
            ok = await self.links.request(node_id, address, "gossip",
                                          {"have": self.state.digest(),
                                           "limit": self.cfg.max_push})  # fmt: skip
            records = ok.get("records")
            if type(records) is list:  # we asked for these: extra ones are cut, not penalized
                res = self.state.merge(node_id, records[: self.cfg.max_push], self.clock_ms())
                self._handle(res.events)
            want = ok.get("want")
            if type(want) is list and want:
                wanted = [w for w in want[: self.cfg.max_push] if type(w) is bytes]
                await self.links.request(node_id, address, "gossip",
                                         {"push": self.state.wires(wanted)})
        except (PeerUnavailable, ProtocolError) as e:
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
        while True:
            now = self.clock_ms()
            try:
                self._handle(self.state.expire(now))
                own = self.state.own
                if now >= own.issued + (own.expires - own.issued) // 2:
                    self.reissue()
                for rec in self.state.due_tests(now):
                    nursery.start_soon(self._test, rec)
                nxt = self.state.next_test_at()
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
            ok = await self.links.request(rec.id, rec.address, "ping",
                                          {"tester": self.identity.node_id, "nonce": nonce},
                                          timeout=self.cfg.test_timeout)  # fmt: skip
            verify_ping(self.identity.node_id, nonce, rec.id, ok.get("sig"))
            return True
        except (PeerUnavailable, ProtocolError, RecordError):
            return False

    async def _test(self, rec):
        try:
            if rec.address is not None and not rec.flags & FLAG_RELAYED:
                ok = await self._ping_pooled(rec)
            else:  # relayed records: the NAT work's pinger reaches them through a relay
                ok = await self.pinger(self.identity, rec, timeout=self.cfg.test_timeout)
        except Exception as e:  # a pinger bug counts as a failed test
            self.log.error("reachability_bug", error=f"{type(e).__name__}: {e}"[:300])
            ok = False
        self.counters["tests_ok" if ok else "tests_failed"] += 1
        if not ok:
            self.log.debug("reachability_failed", peer=short(rec.id),
                           address=f"{rec.address[0]}:{rec.address[1]}" if rec.address else None)
        self._handle(self.state.test_result(rec, ok, self.clock_ms()))

    # -- metrics ------------------------------------------------------------------------------------

    def info(self):
        if self.state is None:
            return {"peers_known": 0, "peers_live": 0}
        return {
            "peers_known": len(self.state),
            "peers_live": len(self.state.live_ids()) - 1,
            "live_set": live_set_digest(self.state.live_ids()),
            "swarm_k": self.placement.k,
            "membership_epoch": self.placement.epoch,
            "records_refused": sum(self.state.refused.values()),
            "gossip_rounds": self.counters["gossip_rounds"],
            "gossip_failed": self.counters["gossip_failed"],
            "reachability_ok": self.counters["tests_ok"],
            "reachability_failed": self.counters["tests_failed"],
            "record_flags": ",".join(self.state.own.flag_names),
        }


def live_set_digest(ids):
    """Short fingerprint of a live set: equal on two nodes iff they see the same members."""
    return hashlib.blake2b(b"".join(sorted(ids)), digest_size=8).hexdigest()


def cfg_jitter(seconds, rng, spread=0.2):
    return seconds * (1 + spread * (2 * rng.random() - 1))
