"""Replication: copies to the swarm, anti-entropy between members, hand-off to new owners.

- **Forwarding.** A client ``store`` is sent with ``replicate`` to the other members of the
  recipient's swarm (placement over the live set) as soon as it passed its checks, while this
  node makes its own copy durable; the answer waits for both and gains ``replicas``: copies
  acknowledged, this one included when this node is a member. A client ``delete``/``expire`` is forwarded as-is (it carries the
  recipient's signature, which each member checks itself). Requests that arrive over a node link
  (``conn.peer_id`` set) are never forwarded again.
- **Anti-entropy.** Every ``anti_entropy_interval`` (and soon after a membership change) we
  compare with each peer we share swarms with: per recipient bucket (first byte of the key) a
  BLAKE2b-128 over the sorted hashes both should hold. ``summary`` returns the peer's hashes in
  differing buckets; we ``fetch_missing`` what we lack and ``replicate`` what it lacks.
- **Hand-off.** Messages of recipients whose swarm no longer includes us are sent to every
  current member with ``handoff``; they are deleted here only once *all* members confirmed
  holding them (retried each round until then).

Deletes leave a **tombstone** (in memory, up to 30 days or 200,000 of them) so that neither
anti-entropy nor hand-off brings a deleted message back to this node; a ``replicate`` of a
tombstoned hash is answered as handled, so the sender's hand-off can complete.

Known limits: tombstones are lost on restart, and a member that missed the delete (it was off)
keeps its copy until expiry, because the recipient's signature cannot be re-checked later (its
timestamp window is 60 s); a peer's ``replicate`` is trusted for non-public namespaces (the
store signature is not kept with the message); anti-entropy compares hashes, not expiries, so
an ``expire`` missed by a member is not repaired.
"""

import hashlib
import random

import trio

from firmware.link import LinkDown
from firmware.logs import short_id as short
from firmware.proto.errors import BadRequest, ProtocolError
from firmware.proto.hashing import message_hash
from firmware.proto.limits import MAX_DATA, MAX_FUTURE_TS, NS_MAX, NS_MIN, TTL_MAX_OTHER, max_ttl
from firmware.store import Message, StoreError

from .membership import cfg_jitter
from .peers import args_of, require_peer

__all__ = ["Replicator", "bucket_of", "bucket_digests"]

MAX_BATCH_BYTES = 800_000  # data per replicate/fetch frame (frames are at most 1 MiB)
MAX_DIFF_HASHES = 8000  # hashes per summary answer (256 KB)
MAX_FETCH = 1000
TOMBSTONE_MS = TTL_MAX_OTHER  # no copy of a deleted message can outlive this
MAX_TOMBSTONES = 200_000  # ~10 MB; the oldest are forgotten first


class _Copies:
    """Copies of one client store on their way to the swarm (the pipeline's replicate stage)."""

    __slots__ = ("replicator", "swarm", "results", "done", "recipient", "ns")

    def __init__(self, replicator, recipient, ns):
        self.replicator = replicator
        self.recipient, self.ns = recipient, ns
        self.swarm = ()
        self.results = {}
        self.done = trio.Event()

    async def finish(self, result) -> dict:
        """After the local write: wait for the members' answers; `{"replicas": n}`."""
        return await self.replicator._finish_store(self, result)


def bucket_of(recipient):
    return recipient[0]


def bucket_digests(index):
    """{bucket: set(hashes)} -> {bucket: BLAKE2b-128 of the sorted hashes}."""
    return {b: hashlib.blake2b(b"".join(sorted(hs)), digest_size=16).digest()
            for b, hs in index.items() if hs}  # fmt: skip


def message_wire(m):
    return {"recipient": m.recipient, "ns": m.ns, "ts": m.ts, "expiry": m.expiry, "data": m.data}


def parse_message(item, now_ms):
    """A replicated message map -> Message (None if already expired); BadRequest if invalid."""
    if type(item) is not dict:
        raise BadRequest("each message must be a map", field="messages")
    r, ns, ts, exp, data = (item.get(k) for k in ("recipient", "ns", "ts", "expiry", "data"))
    if type(r) is not bytes or len(r) != 32:
        raise BadRequest("must be 32 bytes", field="recipient")
    if type(ns) is not int or not NS_MIN <= ns <= NS_MAX:
        raise BadRequest(f"must be an int in {NS_MIN}..{NS_MAX}", field="ns")
    if type(ts) is not int or not 0 <= ts <= now_ms + MAX_FUTURE_TS:
        raise BadRequest("must be ms since the epoch, at most 60 s ahead", field="ts")
    if type(exp) is not int or not ts < exp <= ts + max_ttl(ns):
        raise BadRequest("must be after ts and within the namespace's max ttl", field="expiry")
    if type(data) is not bytes or len(data) > MAX_DATA:
        raise BadRequest(f"must be bytes, at most {MAX_DATA}", field="data")
    if exp <= now_ms:
        return None
    return Message(message_hash(r, ns, ts, data), r, ns, ts, exp, data)


def batches(msgs):
    out, size = [], 0
    for m in msgs:
        if out and size + len(m.data) > MAX_BATCH_BYTES:
            yield out
            out, size = [], 0
        out.append(m)
        size += len(m.data) + 200
    if out:
        yield out


class Replicator:
    def __init__(self, identity, store, roster, pool, cfg, *, clock_ms, log, rng=None,
                 paused=lambda: False, heavy_paused=lambda: False):
        """`pool`: authenticated peer links; `paused()`: skip anti-entropy rounds now (a warm
        box); `heavy_paused()`: skip hand-off bursts now (under-voltage)."""
        self.node_id = identity.node_id
        self.store = store
        self.roster = roster
        self.pool = pool
        self.cfg = cfg
        self.clock_ms = clock_ms
        self.log = log
        self.rng = rng or random.Random()
        self.paused = paused
        self.heavy_paused = heavy_paused
        self._index_cache = None
        self._nursery = None
        self.tombstones = {}  # hash -> until (ms): deleted by its recipient, never re-acquired
        self._locate = {}  # hash -> (recipient, ns), from the same scan
        self.counters = {"stores_forwarded": 0, "replica_acks": 0, "replica_naks": 0,
                         "replicas_last": 0, "replicated_in": 0, "repairs_in": 0,
                         "repairs_out": 0, "handoff_sent": 0, "handoff_dropped": 0,
                         "anti_entropy_rounds": 0, "swarm_recipients": 0,
                         "foreign_recipients": 0, "signed_ops_forwarded": 0,
                         "index_scans": 0, "rounds_paused": 0, "handoffs_paused": 0}  # fmt: skip

    @property
    def placement(self):
        return self.roster.placement

    def _address(self, node_id):
        return self.roster.address_of(node_id)

    # -- the pipeline's replicate stage ---------------------------------------------------------

    async def _send(self, node_id, op, args, results, key):
        address = self._address(node_id)
        if address is None:
            return
        try:
            with trio.move_on_after(self.cfg.replicate_timeout):
                results[key] = await self.pool.request(node_id, address, op, args,
                                                       timeout=self.cfg.replicate_timeout)
        except (LinkDown, ProtocolError) as e:
            self.log.debug("forward_failed", op=op, peer=short(node_id), error=str(e)[:200])

    def start_store(self, req, conn, now_ms):
        """A client store passed admission: start copying it to the other swarm members now, so
        their durable writes overlap ours. None for a node's copy (never forwarded again)."""
        if conn.peer_id is not None:
            return None
        copies = _Copies(self, req.recipient, req.ns)
        msg = {"recipient": req.recipient, "ns": req.ns, "ts": req.ts, "expiry": req.ts + req.ttl,
               "data": req.data, "fresh": True}  # fmt: skip
        if self._nursery is not None:
            self._nursery.start_soon(self._forward, copies, req.recipient, msg)
        else:  # the service is not running (yet): no copies, answered as such
            copies.done.set()
        return copies

    async def _finish_store(self, copies, result):
        """After our own durable write: wait for the swarm's copies; say how many acknowledged."""
        h = result["hash"]
        self._note(Message(h, copies.recipient, copies.ns, 0, result["expiry"], b""))
        try:
            self.tombstones.pop(h, None)  # stored again by a client: alive again
            await copies.done.wait()
            acks = sum(1 for r in copies.results.values() if h in r.get("stored", ()))
            member = self.node_id in copies.swarm
            self.counters["stores_forwarded"] += 1
            self.counters["replica_acks"] += acks
            self.counters["replica_naks"] += len(copies.swarm) - member - acks
            self.counters["replicas_last"] = acks + member
            return {"replicas": acks + member}
        except Exception as e:  # stored here already: a forwarding bug must not fail the store
            self.log.error("forward_store_bug", error=f"{type(e).__name__}: {e}"[:300])
            return {"replicas": int(self.node_id in self.placement.swarm(copies.recipient))}

    async def _forward(self, copies, recipient, msg):
        try:
            copies.swarm = self.placement.swarm(recipient)
            async with trio.open_nursery() as nursery:
                for n in copies.swarm:
                    if n != self.node_id:
                        nursery.start_soon(self._send, n, "replicate", {"messages": [msg]},
                                           copies.results, n)  # fmt: skip
        except Exception as e:
            self.log.error("forward_store_bug", error=f"{type(e).__name__}: {e}"[:300])
        finally:
            copies.done.set()

    def _tombstone(self, hashes, now_ms):
        for h in hashes:
            self.tombstones.pop(h, None)
            self.tombstones[h] = now_ms + TOMBSTONE_MS
        while len(self.tombstones) > MAX_TOMBSTONES:
            del self.tombstones[next(iter(self.tombstones))]

    def _is_dead(self, h, now_ms):
        until = self.tombstones.get(h)
        if until is not None and until <= now_ms:
            del self.tombstones[h]
            return False
        return until is not None

    async def after_write(self, req, result, conn, now_ms):
        """A delete / expire done here: forward a client's signed request to the other members
        (they re-check the signature). Deleted hashes are remembered so anti-entropy and
        hand-off do not bring them back."""
        if req.op == "delete":
            self._tombstone(req.hashes, now_ms)
            self._forget(req.recipient, req.hashes)
        if conn.peer_id is not None:
            return {}
        args = {"recipient": req.recipient, "ns": req.ns, "hashes": list(req.hashes),
                "sig_ts": req.sig_ts, "sig": req.sig}  # fmt: skip
        if req.op == "expire":
            args["expiry"] = req.expiry
        results = {}
        async with trio.open_nursery() as nursery:
            for n in self.placement.swarm(req.recipient):
                if n != self.node_id:
                    nursery.start_soon(self._send, n, req.op, args, results, n)
        self.counters["signed_ops_forwarded"] += len(results)
        return {}  # delete/expire results stay as docs/protocol.md defines them

    # -- node ops ---------------------------------------------------------------------------------

    async def op_replicate(self, frame, conn, now_ms):
        op = frame.get("op")
        peer = require_peer(conn, op)
        items = args_of(frame).get("messages")
        if type(items) is not list or len(items) > 10_000:
            raise BadRequest("must be a list of message maps", field="messages")
        parsed = [(item, parse_message(item, now_ms)) for item in items]  # all checked first
        msgs = []
        for item, m in parsed:
            if m is not None:
                if item.get("fresh") is True:  # a client stored it again: not a resurrection
                    self.tombstones.pop(m.hash, None)
                msgs.append(m)
        stored = []
        for m in msgs:
            if self._is_dead(m.hash, now_ms):  # deleted here: "handled", so the sender drops it
                stored.append(m.hash)
                continue
            try:
                await self.store.put(m)
            except StoreError as e:
                self.log.warning("replicate_store_failed", peer=short(peer), error=str(e)[:200])
                break
            self._note(m)
            stored.append(m.hash)
        self.counters["replicated_in"] += len(stored)
        return {"stored": stored}

    async def _full_index(self):
        """{recipient: {hash: ns}} for the recipients whose swarm includes us.

        A scan costs one query per recipient (~80 us each on the dev machine: 0.8 s for 10,000
        mailboxes), so one scan serves every peer: it is kept while the live set is the same
        and for half an anti-entropy interval, and the messages this module writes or deletes
        update it in place (``_note``/``_forget``). What else changes meanwhile (expiry sweeps)
        is seen at the next scan; until then it only costs a redundant transfer."""
        now = trio.current_time()
        c = self._index_cache
        if (c is not None and c[0] == self.placement.epoch
                and now - c[1] < self.cfg.anti_entropy_interval / 2):  # fmt: skip
            return c[2]
        full, foreign = {}, 0
        for r in await self.store.recipients():
            if self.node_id not in self.placement.swarm(r):
                foreign += 1
                continue
            full[r] = {h: ns for ns, h, _exp in await self.store.hashes_for(r)}
        self.counters["swarm_recipients"] = len(full)
        self.counters["foreign_recipients"] = foreign
        self._index_cache = (self.placement.epoch, now, full)
        self._locate = {h: (r, ns) for r, hs in full.items() for h, ns in hs.items()}
        self.counters["index_scans"] += 1
        return full

    def _note(self, m):
        """We now hold ``m`` durably: keep the cached index current."""
        c = self._index_cache
        if c is None or c[0] != self.placement.epoch or self.node_id not in self.placement.swarm(
                m.recipient):  # fmt: skip
            return
        c[2].setdefault(m.recipient, {})[m.hash] = m.ns
        self._locate[m.hash] = (m.recipient, m.ns)

    def _forget(self, recipient, hashes):
        c = self._index_cache
        held = c[2].get(recipient) if c is not None else None
        for h in hashes:
            if held is not None:
                held.pop(h, None)
            self._locate.pop(h, None)

    async def _load(self, hashes):
        """The stored messages among ``hashes`` (those the index knows), via get_many per
        (recipient, ns) as the store wants it."""
        await self._full_index()
        groups = {}
        for h in hashes:
            where = self._locate.get(h)
            if where is not None:
                groups.setdefault(where, []).append(h)
        out = []
        for (r, ns), hs in groups.items():
            out += await self.store.get_many(r, ns, hs)
        return out

    async def _index(self, peer):
        """{bucket: set(hashes)} of what we hold for recipients whose swarm has us and ``peer``."""
        index = {}
        for r, hs in (await self._full_index()).items():
            if peer in self.placement.swarm(r):
                index.setdefault(bucket_of(r), set()).update(hs)
        return index

    async def op_summary(self, frame, conn, now_ms):
        peer = require_peer(conn, "summary")
        theirs = args_of(frame).get("buckets")
        if type(theirs) is not list or len(theirs) > 256:
            raise BadRequest("must be a list of [bucket, digest] pairs", field="buckets")
        their_digests = {}
        for item in theirs:
            if (type(item) is not list or len(item) != 2 or type(item[0]) is not int
                    or type(item[1]) is not bytes):  # fmt: skip
                raise BadRequest("each entry must be [bucket int, digest bytes]", field="buckets")
            their_digests[item[0]] = item[1]
        index = await self._index(peer)
        mine = bucket_digests(index)
        diff, total, truncated = [], 0, False
        for b in sorted(set(mine) | set(their_digests)):
            if mine.get(b) == their_digests.get(b):
                continue
            hs = sorted(index.get(b, ()))
            if total + len(hs) > MAX_DIFF_HASHES:
                truncated = True
                break
            diff.append([b, hs])
            total += len(hs)
        return {"diff": diff, "truncated": truncated}

    async def op_fetch_missing(self, frame, conn, now_ms):
        require_peer(conn, "fetch_missing")
        hashes = args_of(frame).get("hashes")
        if type(hashes) is not list or len(hashes) > MAX_FETCH or any(
                type(h) is not bytes or len(h) != 32 for h in hashes):  # fmt: skip
            raise BadRequest(f"must be a list of at most {MAX_FETCH} 32-byte hashes",
                             field="hashes")
        out, size = [], 0
        for m in await self._load(hashes):
            if m.expiry <= now_ms:
                continue
            if out and size + len(m.data) > MAX_BATCH_BYTES:
                break
            out.append(message_wire(m))
            size += len(m.data)
        return {"messages": out}

    # -- background rounds --------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            self._nursery = nursery  # where start_store's copies run
            try:
                task_status.started()
                await self._rounds()
            finally:
                self._nursery = None

    async def _rounds(self):
        while True:
            with trio.move_on_after(cfg_jitter(self.cfg.anti_entropy_interval, self.rng)):
                await self.roster.changed()
                await trio.sleep(self.cfg.settle_delay)  # let a burst of changes settle
            try:
                if self.heavy_paused():
                    self.counters["handoffs_paused"] += 1
                else:
                    await self.handoff_round()
                if self.paused():
                    self.counters["rounds_paused"] += 1
                else:
                    await self.anti_entropy_round()
            except StoreError as e:
                self.log.warning("replication_round_failed", error=str(e)[:200])
            except Exception as e:  # a bug costs one round, never the node
                self.log.error("replication_round_bug", error=f"{type(e).__name__}: {e}"[:300])

    async def anti_entropy_round(self):
        """Compare with every live peer that shares a swarm with us; repair both ways."""
        self.counters["anti_entropy_rounds"] += 1
        peers = set()
        for r in await self._full_index():
            peers.update(n for n in self.placement.swarm(r) if n != self.node_id)
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(self._sync_with, peer)

    async def _sync_with(self, peer):
        address = self._address(peer)
        if address is None:
            return
        try:
            index = await self._index(peer)
            digests = bucket_digests(index)
            ok = await self.pool.request(peer, address, "summary",
                                          {"buckets": [[b, d] for b, d in digests.items()]})
            want, give = [], []
            for item in ok.get("diff", []):
                b, theirs = item[0], set(item[1])
                ours = index.get(b, set())
                now = self.clock_ms()
                want += [h for h in theirs - ours
                         if type(h) is bytes and len(h) == 32 and not self._is_dead(h, now)]
                give += list(ours - theirs)
            for i in range(0, len(want), MAX_FETCH):
                got = await self.pool.request(peer, address, "fetch_missing",
                                               {"hashes": want[i:i + MAX_FETCH]})
                now = self.clock_ms()
                for item in got.get("messages", []):
                    m = parse_message(item, now)
                    if m is not None and m.hash in want:
                        await self.store.put(m)
                        self._note(m)
                        self.counters["repairs_in"] += 1
            if give:
                msgs = await self._load(give)
                for batch in batches(msgs):
                    res = await self.pool.request(peer, address, "replicate",
                                                   {"messages": [message_wire(m) for m in batch]})
                    self.counters["repairs_out"] += len(res.get("stored", []))
            if want or give:
                self.log.info("anti_entropy_repaired", peer=short(peer), fetched=len(want),
                              sent=len(give))
        except (LinkDown, ProtocolError) as e:
            self.log.debug("anti_entropy_failed", peer=short(peer), error=str(e)[:200])

    async def handoff_round(self):
        """Hand messages we no longer own to all current owners; drop them once all confirm."""
        for r in await self.store.recipients():
            swarm = self.placement.swarm(r)
            if self.node_id in swarm or not swarm:
                continue
            entries = await self.store.hashes_for(r)
            if not entries:
                continue
            by_ns = {}
            for ns, h, _exp in entries:
                by_ns.setdefault(ns, []).append(h)
            msgs = []
            for ns, hs in by_ns.items():
                msgs += await self.store.get_many(r, ns, hs)
            confirmed = {m.hash: 0 for m in msgs}
            for owner in swarm:
                address = self._address(owner)
                if address is None:
                    continue
                try:
                    for batch in batches(msgs):
                        res = await self.pool.request(
                            owner, address, "handoff",
                            {"messages": [message_wire(m) for m in batch]})  # fmt: skip
                        for h in res.get("stored", []):
                            if h in confirmed:
                                confirmed[h] += 1
                except (LinkDown, ProtocolError) as e:
                    self.log.debug("handoff_failed", peer=short(owner), error=str(e)[:200])
            self.counters["handoff_sent"] += len(msgs)
            done = {}
            for ns, h, _exp in entries:
                if confirmed.get(h) == len(swarm):
                    done.setdefault(ns, []).append(h)
            for ns, hashes in done.items():
                dropped = await self.store.drop_copies(r, ns, hashes)  # no tombstone: handed off
                self.counters["handoff_dropped"] += len(dropped)
            if done:
                self.log.info("handoff_done", recipient_bucket=bucket_of(r),
                              dropped=sum(map(len, done.values())), owners=len(swarm))

    def info(self):
        c = self.counters
        return {k: c[k] for k in ("replicas_last", "replica_acks", "replica_naks",
                                  "repairs_in", "repairs_out", "handoff_dropped",
                                  "swarm_recipients", "foreign_recipients",
                                  "anti_entropy_rounds")}  # fmt: skip
