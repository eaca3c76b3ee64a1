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

- **Owners' proofs.** A private-namespace (ns != 0) copy travels with its owner's store
  signature (``proof``, kept in the store with the message; firmware/proto/copies.py) and is
  checked on receipt. A copy without one or with a wrong one is refused, the whole batch
  answered ``bad_signature`` naming ``proof``, and the sending peer loses score (and, below the
  ban score, is not taken copies from at all). Namespace 0 stays public.
- **Deletes stay deleted.** The store keeps a durable tombstone (with the owner's signed delete
  as its proof) for every deleted hash. A copy of a tombstoned hash is answered as handled and
  not stored, anti-entropy never fetches one, and when a peer still holds one (it was off during
  the delete) we send it the signed delete (op ``tombstones``), which it re-verifies.

Known limit: anti-entropy compares hashes, not expiries, so an ``expire`` missed by a member is
not repaired.
"""

import random

import trio

from firmware.link import LinkDown
from firmware.logs import short_id as short
from firmware.proto import copies
from firmware.proto.errors import BadRequest, BadSignature, ProtocolError
from firmware.proto.limits import PUBLIC_NS
from firmware.store import Message, StoreError

from .membership import cfg_jitter
from .peers import args_of, require_peer
from .replica_wire import (
    MAX_BATCH_BYTES,
    batches,
    bucket_digests,
    bucket_of,
    message_of,
    message_wire,
)

__all__ = ["Replicator"]

MAX_DIFF_HASHES = 8000  # hashes per summary answer (256 KB)
MAX_FETCH = 1000
MAX_DELETE_GROUPS = 64  # signed deletes per `tombstones` request (one Ed25519 verify each)


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


class Replicator:
    def __init__(self, identity, store, roster, pool, cfg, *, clock_ms, log, rng=None,
                 paused=lambda: False, heavy_paused=lambda: False):
        """`roster`: placement, peer addresses, and `charge(peer, reason)` / `banned(peer)` for
        peers that send copies without their owners' proofs; `pool`: authenticated peer
        links; `paused()`: skip anti-entropy rounds now (a warm box); `heavy_paused()`: skip
        hand-off bursts now (under-voltage)."""
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
        self.counters = {"stores_forwarded": 0, "replica_acks": 0, "replica_naks": 0,
                         "replicas_last": 0, "replicated_in": 0, "repairs_in": 0,
                         "repairs_out": 0, "handoff_sent": 0, "handoff_dropped": 0,
                         "anti_entropy_rounds": 0, "swarm_recipients": 0,
                         "foreign_recipients": 0, "signed_ops_forwarded": 0,
                         "index_scans": 0, "rounds_paused": 0, "handoffs_paused": 0,
                         "copies_refused": 0, "copies_unprovable": 0, "deletes_sent": 0,
                         "deletes_applied": 0, "deletes_unverified": 0}  # fmt: skip

    @property
    def placement(self):
        return self.roster.placement

    def _address(self, node_id):
        return self.roster.address_of(node_id)

    # -- copies in: every one checked, a bad proof costs the peer -----------------------------

    def _parse(self, peer, items, now_ms, why):
        """Wire copies -> checked Copies (expired ones dropped); the whole batch is refused
        (the error raised) if any is malformed or lacks a valid owner's proof."""
        try:
            return [c for c in (copies.parse_copy(item, now_ms) for item in items) if c]
        except (BadRequest, BadSignature) as e:
            if e.field == "proof":  # honest nodes only send copies they checked
                self.counters["copies_refused"] += 1
                self.roster.charge(peer, "copy_proof")
                self.log.warning("copy_refused", peer=short(peer), op=why, error=e.msg[:200])
            raise

    async def _keep(self, checked, peer):
        """Store checked copies; the hashes held now (a deleted one counts: handled, so the
        sender may drop its copy). Stops at a store error (a full disk): the rest is not held."""
        held = []
        for c in checked:
            m = message_of(c)
            try:
                res = await self.store.put(m)
            except StoreError as e:
                self.log.warning("replicate_store_failed", peer=short(peer), error=str(e)[:200])
                break
            if not res.deleted:
                self._note(m)
            held.append(c.hash)
        return held

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
        copies_ = _Copies(self, req.recipient, req.ns)
        proof = copies.store_proof(req.sig_ts, req.sig) if req.ns != PUBLIC_NS else b""
        msg = copies.copy_wire(copies.Copy(b"", req.recipient, req.ns, req.ts, req.ts + req.ttl,
                                           req.data, proof, fresh=True))  # fmt: skip
        if self._nursery is not None:
            self._nursery.start_soon(self._forward, copies_, req.recipient, msg)
        else:  # the service is not running (yet): no copies, answered as such
            copies_.done.set()
        return copies_

    async def _finish_store(self, copies_, result):
        """After our own durable write: wait for the swarm's copies; say how many acknowledged."""
        h = result["hash"]
        self._note(Message(h, copies_.recipient, copies_.ns, 0, result["expiry"], b""))
        try:
            await copies_.done.wait()
            acks = sum(1 for r in copies_.results.values() if h in r.get("stored", ()))
            member = self.node_id in copies_.swarm
            self.counters["stores_forwarded"] += 1
            self.counters["replica_acks"] += acks
            self.counters["replica_naks"] += len(copies_.swarm) - member - acks
            self.counters["replicas_last"] = acks + member
            return {"replicas": acks + member}
        except Exception as e:  # stored here already: a forwarding bug must not fail the store
            self.log.error("forward_store_bug", error=f"{type(e).__name__}: {e}"[:300])
            return {"replicas": int(self.node_id in self.placement.swarm(copies_.recipient))}

    async def _forward(self, copies_, recipient, msg):
        try:
            copies_.swarm = self.placement.swarm(recipient)
            async with trio.open_nursery() as nursery:
                for n in copies_.swarm:
                    if n != self.node_id:
                        nursery.start_soon(self._send, n, "replicate", {"messages": [msg]},
                                           copies_.results, n)  # fmt: skip
        except Exception as e:
            self.log.error("forward_store_bug", error=f"{type(e).__name__}: {e}"[:300])
        finally:
            copies_.done.set()

    async def after_write(self, req, result, conn, now_ms):
        """A delete / expire done here (the store kept the delete's tombstones with its proof):
        forward a client's signed request to the other members (they re-check the signature)."""
        if req.op == "delete":
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

    def _require_trusted(self, conn, op):
        peer = require_peer(conn, op)
        if self.roster.banned(peer):
            raise BadRequest(f"{op} refused: this node takes no copies from yours (it sent "
                             "private copies without their owners' proofs)")
        return peer

    async def op_replicate(self, frame, conn, now_ms):
        op = frame.get("op")
        peer = self._require_trusted(conn, op)
        items = args_of(frame).get("messages")
        if type(items) is not list or len(items) > 10_000:
            raise BadRequest("must be a list of message maps", field="messages")
        checked = self._parse(peer, items, now_ms, op)  # all checked before any is stored
        stored = await self._keep(checked, peer)
        self.counters["replicated_in"] += len(stored)
        return {"stored": stored}

    async def op_tombstones(self, frame, conn, now_ms):
        """A peer shows us owners' signed deletes of messages we may still hold."""
        require_peer(conn, "tombstones")
        items = args_of(frame).get("deletes")
        if type(items) is not list or len(items) > MAX_DELETE_GROUPS:
            raise BadRequest(f"must be a list of at most {MAX_DELETE_GROUPS} deletes",
                             field="deletes")
        applied = 0
        for g in [copies.parse_delete(item) for item in items]:
            try:
                copies.verify_delete(g.recipient, g.ns, g.hashes, g.proof)
            except BadSignature:  # a delete partly swept at the sender: not a lie, not usable
                self.counters["deletes_unverified"] += 1
                continue
            removed = await self.store.delete(g.recipient, g.ns, list(g.hashes), proof=g.proof)
            self._forget(g.recipient, g.hashes)
            applied += len(removed)
        self.counters["deletes_applied"] += applied
        return {"deleted": applied}

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
        self.counters["index_scans"] += 1
        return full

    def _note(self, m):
        """We now hold ``m`` durably: keep the cached index current."""
        c = self._index_cache
        if c is None or c[0] != self.placement.epoch or self.node_id not in self.placement.swarm(
                m.recipient):  # fmt: skip
            return
        c[2].setdefault(m.recipient, {})[m.hash] = m.ns

    def _forget(self, recipient, hashes):
        c = self._index_cache
        held = c[2].get(recipient) if c is not None else None
        if held is not None:
            for h in hashes:
                held.pop(h, None)

    async def _load(self, hashes, peer):
        """The stored messages among ``hashes`` that ``peer`` may have: those of recipients
        whose swarm holds it (a hash alone does not entitle a node to a mailbox's data)."""
        return [m for m in await self.store.get_by_hash(hashes)
                if peer in self.placement.swarm(m.recipient)]

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
        peer = require_peer(conn, "fetch_missing")
        hashes = args_of(frame).get("hashes")
        if type(hashes) is not list or len(hashes) > MAX_FETCH or any(
                type(h) is not bytes or len(h) != 32 for h in hashes):  # fmt: skip
            raise BadRequest(f"must be a list of at most {MAX_FETCH} 32-byte hashes",
                             field="hashes")
        out, size = [], 0
        for m in await self._load(hashes, peer):
            wire = message_wire(m)
            if m.expiry <= now_ms or wire is None:
                continue
            if out and size + len(m.data) > MAX_BATCH_BYTES:
                break
            out.append(wire)
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
                if type(item) is not list or len(item) != 2 or type(item[1]) is not list:
                    continue
                theirs = {h for h in item[1] if type(h) is bytes and len(h) == 32}
                ours = index.get(item[0], set())
                want += theirs - ours
                give += ours - theirs
            dead = await self.store.is_deleted(want) if want else set()
            if dead:  # they still hold what the owner deleted here: show them the delete
                want = [h for h in want if h not in dead]
                await self._show_deletes(peer, address, dead)
            for i in range(0, len(want), MAX_FETCH):
                asked = want[i:i + MAX_FETCH]
                got = await self.pool.request(peer, address, "fetch_missing", {"hashes": asked})
                items = got.get("messages")
                checked = self._parse(peer, items if type(items) is list else [],
                                      self.clock_ms(), "fetch_missing")
                asked = set(asked)
                held = await self._keep([c for c in checked if c.hash in asked], peer)
                self.counters["repairs_in"] += len(held)
            sent = 0
            if give:
                msgs = self._sendable(await self._load(give, peer))
                for batch in batches(msgs):
                    res = await self.pool.request(peer, address, "replicate",
                                                   {"messages": [message_wire(m) for m in batch]})
                    self.counters["repairs_out"] += len(res.get("stored", []))
                    sent += len(batch)
            if want or sent or dead:
                self.log.info("anti_entropy_repaired", peer=short(peer), fetched=len(want),
                              sent=sent, deletes_shown=len(dead))
        except (LinkDown, ProtocolError) as e:
            self.log.debug("anti_entropy_failed", peer=short(peer), error=str(e)[:200])

    def _sendable(self, msgs):
        """Messages a peer can check: private ones only with their owners' proofs."""
        out = [m for m in msgs if m.ns == PUBLIC_NS or m.proof]
        self.counters["copies_unprovable"] += len(msgs) - len(out)
        return out

    async def _show_deletes(self, peer, address, dead):
        """Send ``peer`` the owners' signed deletes covering ``dead`` (each delete whole: its
        signature covers every hash it named), at most MAX_DIFF_HASHES hashes a request."""
        groups = []
        for r in {t.recipient for t in await self.store.tombstones_of(list(dead))}:
            groups += [g for g in copies.delete_groups(await self.store.tombstones(r))
                       if not dead.isdisjoint(g.hashes)]
        batch, size = [], 0
        for g in groups + [None]:
            if batch and (g is None or len(batch) == MAX_DELETE_GROUPS
                          or size + len(g.hashes) > MAX_DIFF_HASHES):  # fmt: skip
                await self.pool.request(peer, address, "tombstones",
                                        {"deletes": [copies.delete_wire(x) for x in batch]})
                self.counters["deletes_sent"] += len(batch)
                batch, size = [], 0
            if g is not None:
                batch.append(g)
                size += len(g.hashes)

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
            msgs = self._sendable(msgs)
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
                                  "anti_entropy_rounds", "copies_refused", "deletes_sent",
                                  "deletes_applied")}  # fmt: skip
