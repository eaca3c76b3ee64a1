"""Sans-IO membership: the record table, push-pull merging, liveness and peer scores.

Why a separate state machine: everything that decides who is in the network (which records to
keep, who is live, whom to test when, which peer misbehaves) is pure and tested with exact
inputs and outputs here; ``firmware/net/membership.py`` only moves bytes and sleeps.

- **Records** arrive from any peer (``merge``), are verified (``records.verify_record``), and
  replace what we hold only with a higher seq. Per push at most ``max_push`` records are looked
  at; the rest are refused as a flood. The table holds at most ``max_records`` nodes.
- **Liveness**: a record counts as live only after a reachability test succeeded (the I/O side
  connects to the advertised address and checks a signed answer). ``due_tests(now)`` hands out
  tests, ``test_result`` takes the outcome. A live node is re-tested every ``test_interval_ms``
  with +/- ``jitter``; after a failure the wait doubles up to ``max_backoff_ms`` (10 s -> 2 min
  by default, as Session's storage server does). After ``fail_threshold`` failures in a row a live
  node is down. A record whose address changes must prove itself again. Live peers are
  re-tested at most ``max_test_rate`` per second in all (a 10,000-node table is re-tested every
  ~33 min at 5/s instead of 1,000 tests a second).
- **Ids** must carry a proof of work of ``pow_bits`` (firmware/proto/pow.py): records of
  cheaper ids are refused like forged ones (reason ``pow``), so they are never tested or live.
- **Scores**: each bad record costs its sender points (forged signatures most); a peer below
  ``ban_score`` is ignored, and so is every node in ``denied`` (the operator's list): their
  records are refused from anyone, so they are never tested nor live here. Records whose
  address ``address_ok`` refuses (see ``records.address_allowed``) are never tested.
- Randomness (jitter, gossip partners) comes from an injected ``random.Random`` so tests are
  exact; time is the ``now`` argument (ms).

Events (returned, never called back): :class:`NodeLive`, :class:`NodeDown`, :class:`NodeDropped`,
:class:`OwnRecordSuperseded`. ``live_version`` increments on every change of the live set.
"""

import hashlib
from dataclasses import dataclass

from .records import RecordError, verify_record

__all__ = [
    "NodeLive",
    "NodeDown",
    "NodeDropped",
    "OwnRecordSuperseded",
    "MergeResult",
    "PENALTIES",
    "GossipState",
]


@dataclass(frozen=True)
class NodeLive:
    node_id: bytes


@dataclass(frozen=True)
class NodeDown:
    node_id: bytes


@dataclass(frozen=True)
class NodeDropped:
    """The record left the table (expired); a NodeDown precedes it if the node was live."""

    node_id: bytes


@dataclass(frozen=True)
class OwnRecordSuperseded:
    """Someone holds a record of ours with a higher seq (we lost state): re-issue above it."""

    seq: int


# Score cost per refused record, by reason. Expired/stale records happen between honest nodes
# (clock skew, gossip races), so they cost little; a forged signature never happens by accident.
PENALTIES = {
    "bad_signature": 25,
    "malformed": 10,
    "lifetime": 10,
    "not_yet_valid": 2,
    "expired": 1,
    "flood": 20,
    "pow": 5,  # an id below the network's difficulty: junk, or a node made before a raise
    # a private-namespace copy without its owner's valid proof (replicate, handoff,
    # fetch_missing): honest nodes only ever send copies they checked, so it is never an accident
    "copy_proof": 25,
}


@dataclass
class MergeResult:
    accepted: list  # node ids whose record was new or newer
    rejected: list  # (index in the push, reason) for refused records
    stale: int = 0  # records we already had (same or older seq): not an error
    events: list = None


class _Entry:
    __slots__ = ("record", "live", "failures", "next_test", "testing")

    def __init__(self, record, next_test):
        self.record = record
        self.live = False
        self.failures = 0
        self.next_test = next_test
        self.testing = False


class GossipState:
    def __init__(
        self,
        own_record,
        *,
        rng,
        test_interval_ms=10_000,
        max_backoff_ms=120_000,
        jitter=0.2,
        fail_threshold=1,
        max_push=256,
        max_records=20_000,
        max_tests_in_flight=8,
        max_test_rate=5.0,
        ban_score=-100,
        denied=(),
        address_ok=None,
        pow_bits=0,
    ):
        self.own = own_record
        self.rng = rng
        self.test_interval_ms = test_interval_ms
        self.max_backoff_ms = max_backoff_ms
        self.jitter = jitter
        self.fail_threshold = fail_threshold
        self.max_push = max_push
        self.max_records = max_records
        self.max_tests_in_flight = max_tests_in_flight
        self.max_test_rate = max_test_rate
        self.ban_score = ban_score
        self.denied = frozenset(denied)  # node ids the operator refuses outright
        self.address_ok = address_ok  # host -> bool: addresses we agree to connect to
        self.pow_bits = pow_bits  # the network's id difficulty ([network] pow_bits)
        self.live_version = 0
        self.scores = {}
        self.refused = {}  # reason -> count, for metrics
        self._table = {}
        self._in_flight = 0
        self._changes = 0  # bumped whenever a record is added, replaced or dropped
        self._digest_hash = None

    # -- own record -------------------------------------------------------------------------

    @property
    def own_id(self):
        return self.own.id

    def set_own(self, record):
        """Replace our own record (re-issued with a higher seq, e.g. new address or flags)."""
        if record.id != self.own.id or record.seq <= self.own.seq:
            raise ValueError("own record must keep the id and raise the seq")
        self.own = record

    # -- queries ----------------------------------------------------------------------------

    def __len__(self):
        return len(self._table)

    def get(self, node_id):
        """The record we hold for ``node_id`` (ours included), or None."""
        if node_id == self.own.id:
            return self.own
        e = self._table.get(node_id)
        return e.record if e else None

    def is_live(self, node_id):
        if node_id == self.own.id:
            return True
        e = self._table.get(node_id)
        return bool(e and e.live)

    def live_ids(self):
        """Ids of live nodes, ourselves included (what placement runs over)."""
        return frozenset([self.own.id, *(i for i, e in self._table.items() if e.live)])

    def live_records(self):
        return [self.own, *(e.record for e in self._table.values() if e.live)]

    def known_records(self):
        return [self.own, *(e.record for e in self._table.values())]

    def score(self, peer_id):
        return self.scores.get(peer_id, 0)

    def banned(self, peer_id):
        return peer_id in self.denied or self.score(peer_id) <= self.ban_score

    def digest(self):
        """[[id, seq], ...] of everything we hold: the "have" half of a push-pull exchange."""
        return [[self.own.id, self.own.seq], *([i, e.record.seq] for i, e in self._table.items())]

    def digest_hash(self):
        """16 bytes that are equal on two nodes holding the same (id, seq) set: lets a converged
        pair skip sending the whole digest (N x 41 bytes) every round. Cached until the table
        changes (sorting 10,000 entries takes milliseconds)."""
        key = (self._changes, self.own.seq)
        if self._digest_hash is None or self._digest_hash[0] != key:
            items = sorted(i + seq.to_bytes(8, "big") for i, seq in self.digest())
            self._digest_hash = (key, hashlib.blake2b(b"".join(items), digest_size=16).digest())
        return self._digest_hash[1]

    # -- push-pull --------------------------------------------------------------------------

    def _penalize(self, peer_id, reason, times=1):
        self.refused[reason] = self.refused.get(reason, 0) + times
        if peer_id is not None:
            self.scores[peer_id] = self.score(peer_id) - PENALTIES[reason] * times

    def charge(self, peer_id, reason):
        """A peer misbehaved outside gossip (``reason`` from PENALTIES, e.g. ``copy_proof``):
        its score drops (``refused`` counts records only)."""
        if peer_id is not None:
            self.scores[peer_id] = self.score(peer_id) - PENALTIES[reason]

    def merge(self, sender_id, wires, now):
        """Take records pushed by ``sender_id`` (None: not attributable); return a MergeResult."""
        result = MergeResult([], [], 0, [])
        if sender_id is not None and self.banned(sender_id):
            result.rejected = [(i, "banned") for i in range(len(wires))]
            return result
        if len(wires) > self.max_push:
            over = len(wires) - self.max_push
            result.rejected.extend((i, "flood") for i in range(self.max_push, len(wires)))
            self._penalize(sender_id, "flood")  # one penalty per flooding push
            self.refused["flood"] += over - 1  # but every refused record is counted
            wires = wires[: self.max_push]
        for i, wire in enumerate(wires):
            try:
                rec = verify_record(wire, now, pow_bits=self.pow_bits)
            except RecordError as exc:
                result.rejected.append((i, exc.reason))
                self._penalize(sender_id, exc.reason)
                continue
            if rec.id in self.denied:
                result.rejected.append((i, "denied"))
                continue
            if self.address_ok is not None and rec.addrs and not self.address_ok(rec.addrs[0]):
                result.rejected.append((i, "address"))  # not the sender's fault: no penalty
                self.refused["address"] = self.refused.get("address", 0) + 1
                continue
            if rec.id == self.own.id:
                if rec.seq > self.own.seq:
                    result.events.append(OwnRecordSuperseded(rec.seq))
                else:
                    result.stale += 1
                continue
            entry = self._table.get(rec.id)
            if entry is None:
                if len(self._table) >= self.max_records:
                    result.rejected.append((i, "table_full"))
                    self.refused["table_full"] = self.refused.get("table_full", 0) + 1
                    continue
                self._table[rec.id] = _Entry(rec, now)
                self._changes += 1
                result.accepted.append(rec.id)
            elif rec.newer_than(entry.record):
                moved = (rec.addrs, rec.port, rec.flags, rec.relays) != (
                    entry.record.addrs, entry.record.port, entry.record.flags, entry.record.relays)  # fmt: skip
                entry.record = rec
                self._changes += 1
                if moved:  # a new address must prove itself; test it right away
                    entry.failures = 0
                    entry.next_test = now
                    if entry.live:
                        entry.live = False
                        self.live_version += 1
                        result.events.append(NodeDown(rec.id))
                result.accepted.append(rec.id)
            else:
                result.stale += 1
        return result

    def answer(self, have, limit):
        """Our side of a push-pull given the peer's digest ``have`` ([[id, seq], ...]).

        Returns (records the peer lacks or holds older, ids the peer holds newer than we do).
        Our own record and live ones go first; at most ``limit`` records.
        """
        theirs = {}
        for item in have[: self.max_records + 1]:
            if (type(item) is list and len(item) == 2 and type(item[0]) is bytes
                    and type(item[1]) is int):  # fmt: skip
                theirs[item[0]] = item[1]
        send, want = [], []
        ordered = [(self.own.id, self.own, True)]
        ordered += [(i, e.record, e.live) for i, e in self._table.items()]
        ordered.sort(key=lambda t: not t[2])  # stable: own first, then live, then the rest
        for node_id, rec, _live in ordered:
            seq = theirs.get(node_id)
            if (seq is None or seq < rec.seq) and len(send) < limit:
                send.append(rec.wire)
        for node_id, seq in theirs.items():
            mine = self.get(node_id)
            if (mine is None or mine.seq < seq) and node_id != self.own.id:
                want.append(node_id)
        return send, want[:limit]

    def wires(self, node_ids):
        """Signed records for ``node_ids`` that we hold (what a peer asked for with ``want``)."""
        out = []
        for i in node_ids:
            rec = self.get(i)
            if rec is not None:
                out.append(rec.wire)
        return out

    def pick_peers(self, n):
        """Up to ``n`` random gossip partners: live ones, else any known (bootstrapping)."""
        live = [i for i, e in self._table.items() if e.live]
        pool = live or list(self._table)
        return self.rng.sample(pool, min(n, len(pool)))

    # -- liveness ---------------------------------------------------------------------------

    def _jittered(self, ms):
        return int(ms * (1 + self.jitter * (2 * self.rng.random() - 1)))

    def due_tests(self, now):
        """Records to reachability-test now (marked in flight until ``test_result``)."""
        out = []
        room = self.max_tests_in_flight - self._in_flight
        if room <= 0:
            return out
        due = [e for e in self._table.values() if not e.testing and e.next_test <= now]
        due.sort(key=lambda e: e.next_test)
        for e in due[:room]:
            e.testing = True
            self._in_flight += 1
            out.append(e.record)
        return out

    def next_test_at(self):
        """Earliest time a test is due (None if nothing to test): how long the I/O side sleeps."""
        times = [e.next_test for e in self._table.values() if not e.testing]
        return min(times) if times else None

    def test_result(self, record, ok, now):
        """Outcome of testing ``record`` (as handed out by due_tests); returns events."""
        e = self._table.get(record.id)
        if e is None or not e.testing:
            return []  # dropped meanwhile, or a result we never asked for
        e.testing = False
        self._in_flight -= 1
        if e.record.address != record.address:
            e.next_test = now  # it moved while we tested the old address: test the new one
            return []
        events = []
        if ok:
            e.failures = 0
            # live peers are re-tested every test_interval, but never more than max_test_rate
            # tests per second in all: a big table stretches the interval instead
            interval = max(self.test_interval_ms, len(self._table) * 1000 / self.max_test_rate)
            e.next_test = now + self._jittered(int(interval))
            if not e.live:
                e.live = True
                self.live_version += 1
                events.append(NodeLive(record.id))
        else:
            e.failures += 1
            wait = min(self.test_interval_ms * 2 ** min(e.failures, 30), self.max_backoff_ms)
            e.next_test = now + self._jittered(wait)
            if e.live and e.failures >= self.fail_threshold:
                e.live = False
                self.live_version += 1
                events.append(NodeDown(record.id))
        return events

    def expire(self, now):
        """Drop expired records; returns events (NodeDown first for live ones)."""
        events = []
        for node_id in [i for i, e in self._table.items() if e.record.expired(now)]:
            e = self._table.pop(node_id)
            self._changes += 1
            if e.testing:
                self._in_flight -= 1
            if e.live:
                self.live_version += 1
                events.append(NodeDown(node_id))
            events.append(NodeDropped(node_id))
        return events
