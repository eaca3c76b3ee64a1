"""Sans-IO membership state: merge, liveness, backoff, scores (firmware/proto/gossip.py)."""

import random

from nacl.signing import SigningKey

from firmware.proto.gossip import (
    GossipState,
    NodeDown,
    NodeDropped,
    NodeLive,
    OwnRecordSuperseded,
)
from firmware.proto.records import FLAG_REACHABLE, make_record

T0 = 1_800_000_000_000
HOUR = 3_600_000
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(8)]
IDS = [bytes(k.verify_key) for k in KEYS]
PEER = IDS[7]  # the peer that pushes records at us


class MidRandom:
    """random() always 0.5 (no jitter), sample() takes the first n: exact timings in tests."""

    def random(self):
        return 0.5

    def sample(self, pool, n):
        return list(pool)[:n]


def rec(i, seq=1, port=7000, issued=T0, lifetime=HOUR):
    return make_record(KEYS[i], seq=seq, addrs=["127.0.0.1"], port=port + i, version="t",
                       flags=FLAG_REACHABLE, issued=issued, expires=issued + lifetime)


def state(**kw):
    return GossipState(rec(0), rng=MidRandom(), **kw)


def test_merge_accepts_new_and_newer_only():
    g = state()
    r = g.merge(PEER, [rec(1).wire, rec(2).wire], T0)
    assert (r.accepted, r.rejected, r.stale, r.events) == ([IDS[1], IDS[2]], [], 0, [])
    r = g.merge(PEER, [rec(1, seq=1).wire, rec(2, seq=2).wire], T0)
    assert (r.accepted, r.stale) == ([IDS[2]], 1)
    assert g.get(IDS[2]).seq == 2
    # replayed old sequence number: ignored, the newer record stays
    r = g.merge(PEER, [rec(2, seq=1).wire], T0)
    assert (r.accepted, r.rejected, r.stale) == ([], [], 1)
    assert g.get(IDS[2]).seq == 2
    assert g.score(PEER) == 0


def test_new_records_are_not_live_until_tested():
    g = state()
    g.merge(PEER, [rec(1).wire, rec(2).wire], T0)
    assert g.live_ids() == {IDS[0]}
    tests = g.due_tests(T0)
    assert [t.id for t in tests] == [IDS[1], IDS[2]]
    assert g.due_tests(T0) == []  # in flight: not handed out twice
    assert g.test_result(tests[0], True, T0 + 5) == [NodeLive(IDS[1])]
    assert g.test_result(tests[1], False, T0 + 5) == []
    assert g.live_ids() == {IDS[0], IDS[1]} and g.live_version == 1
    assert [r.id for r in g.live_records()] == [IDS[0], IDS[1]]


def test_retest_interval_and_backoff_to_cap():
    g = state(test_interval_ms=10_000, max_backoff_ms=120_000)
    g.merge(PEER, [rec(1).wire], T0)
    (t,) = g.due_tests(T0)
    g.test_result(t, True, T0)
    assert g.next_test_at() == T0 + 10_000
    assert g.due_tests(T0 + 9_999) == []
    now = T0 + 10_000
    waits = []
    for _ in range(6):
        (t,) = g.due_tests(now)
        events = g.test_result(t, False, now)
        nxt = g.next_test_at()
        waits.append(nxt - now)
        now = nxt
        if len(waits) == 1:
            assert events == [NodeDown(IDS[1])]
        else:
            assert events == []
    assert waits == [20_000, 40_000, 80_000, 120_000, 120_000, 120_000]
    (t,) = g.due_tests(now)
    assert g.test_result(t, True, now) == [NodeLive(IDS[1])]
    assert g.next_test_at() == now + 10_000  # success resets the backoff


def test_jitter_spreads_retests():
    g = GossipState(rec(0), rng=random.Random(1), test_interval_ms=10_000, jitter=0.2)
    g.merge(PEER, [rec(i).wire for i in range(1, 7)], T0)
    for t in g.due_tests(T0):
        g.test_result(t, True, T0)
    nexts = sorted(e.next_test - T0 for e in g._table.values())
    assert all(8_000 <= n <= 12_000 for n in nexts)
    assert len(set(nexts)) == 6


def test_fail_threshold():
    g = state(fail_threshold=2)
    g.merge(PEER, [rec(1).wire], T0)
    (t,) = g.due_tests(T0)
    g.test_result(t, True, T0)
    (t,) = g.due_tests(T0 + 10_000)
    assert g.test_result(t, False, T0 + 10_000) == []
    (t,) = g.due_tests(T0 + 30_000)
    assert g.test_result(t, False, T0 + 30_000) == [NodeDown(IDS[1])]


def test_tests_in_flight_are_limited():
    g = state(max_tests_in_flight=2)
    g.merge(PEER, [rec(i).wire for i in range(1, 6)], T0)
    first = g.due_tests(T0)
    assert len(first) == 2 and g.due_tests(T0) == []
    g.test_result(first[0], True, T0)
    assert len(g.due_tests(T0)) == 1


def test_forged_records_cost_the_sender_and_ban():
    g = state(ban_score=-100)
    good = rec(1).wire
    forged = {"body": good["body"], "sig": bytes(64)}
    r = g.merge(PEER, [forged, rec(2).wire], T0)
    assert (r.accepted, r.rejected) == ([IDS[2]], [(0, "bad_signature")])
    assert g.score(PEER) == -25 and g.get(IDS[1]) is None
    for _ in range(3):
        g.merge(PEER, [forged], T0)
    assert g.banned(PEER)
    r = g.merge(PEER, [rec(3).wire], T0)
    assert (r.accepted, r.rejected) == ([], [(0, "banned")])
    assert g.refused == {"bad_signature": 4}
    assert not g.banned(IDS[6])


def test_expired_and_future_records_rejected_cheaply():
    g = state()
    old = rec(1, issued=T0 - 2 * HOUR)
    future = rec(2, issued=T0 + 120_000)
    r = g.merge(PEER, [old.wire, future.wire], T0)
    assert r.rejected == [(0, "expired"), (1, "not_yet_valid")]
    assert g.score(PEER) == -3


def test_flood_beyond_push_limit():
    g = state(max_push=3)
    wires = [rec(i).wire for i in range(1, 7)]
    r = g.merge(PEER, wires, T0)
    assert r.accepted == IDS[1:4]
    assert r.rejected == [(3, "flood"), (4, "flood"), (5, "flood")]
    assert g.score(PEER) == -20 and g.refused == {"flood": 3}


def test_table_limit():
    g = state(max_records=2)
    r = g.merge(PEER, [rec(i).wire for i in range(1, 4)], T0)
    assert r.accepted == IDS[1:3] and r.rejected == [(2, "table_full")]
    assert g.merge(PEER, [rec(1, seq=5).wire], T0).accepted == [IDS[1]]  # updates still fit


def test_own_record_from_others():
    g = state()
    assert g.merge(PEER, [rec(0).wire], T0).stale == 1
    r = g.merge(PEER, [rec(0, seq=9).wire], T0)
    assert r.events == [OwnRecordSuperseded(9)] and g.own.seq == 1
    g.set_own(rec(0, seq=10))
    assert g.own.seq == 10


def test_moved_node_must_prove_itself_again():
    g = state()
    g.merge(PEER, [rec(1).wire], T0)
    (t,) = g.due_tests(T0)
    g.test_result(t, True, T0)
    r = g.merge(PEER, [rec(1, seq=2).wire], T0 + 1)  # same address: stays live
    assert r.events == [] and g.is_live(IDS[1])
    r = g.merge(PEER, [rec(1, seq=3, port=8000).wire], T0 + 2)
    assert r.events == [NodeDown(IDS[1])] and not g.is_live(IDS[1])
    assert [t.port for t in g.due_tests(T0 + 2)] == [8001]


def test_result_for_old_address_is_ignored():
    g = state()
    g.merge(PEER, [rec(1).wire], T0)
    (t,) = g.due_tests(T0)
    g.merge(PEER, [rec(1, seq=2, port=8000).wire], T0)
    assert g.test_result(t, True, T0) == [] and not g.is_live(IDS[1])
    assert [x.port for x in g.due_tests(T0)] == [8001]


def test_expiry_drops_records():
    g = state()
    g.merge(PEER, [rec(1, lifetime=1000).wire, rec(2, lifetime=5000).wire], T0)
    for t in g.due_tests(T0):
        g.test_result(t, True, T0)
    assert g.expire(T0 + 999) == []
    assert g.expire(T0 + 1000) == [NodeDown(IDS[1]), NodeDropped(IDS[1])]
    assert g.live_ids() == {IDS[0], IDS[2]} and len(g) == 1


def test_push_pull_answer():
    a, b = state(), GossipState(rec(1), rng=MidRandom())
    a.merge(PEER, [rec(2, seq=5).wire, rec(3).wire], T0)
    b.merge(PEER, [rec(2, seq=4).wire, rec(4).wire], T0)
    send, want = b.answer(a.digest(), limit=100)
    # b sends its own record and 4 (a lacks them); it wants 2 (a has seq 5) and 0, 3
    assert send == [rec(1).wire, rec(4).wire]
    assert set(want) == {IDS[0], IDS[2], IDS[3]}
    assert a.merge(IDS[1], send, T0).accepted == [IDS[1], IDS[4]]
    assert b.merge(IDS[0], a.wires(want), T0).accepted == [IDS[0], IDS[2], IDS[3]]
    assert {i for i, _ in a.digest()} == {i for i, _ in b.digest()} == set(IDS[:5])
    assert b.answer(a.digest(), limit=1)[0] == []  # converged: nothing to send
    # a junk digest counts as knowing nothing: everything, own record first, insertion order
    send, want = b.answer([["junk"], [b"x", "y"], 5], limit=10)
    assert send == b.wires([IDS[1], IDS[2], IDS[4], IDS[0], IDS[3]]) and want == []


def test_pick_peers_prefers_live():
    g = state()
    g.merge(PEER, [rec(1).wire, rec(2).wire], T0)
    assert g.pick_peers(5) == [IDS[1], IDS[2]]  # nobody live yet: bootstrap from known
    t1, t2 = g.due_tests(T0)
    g.test_result(t2, True, T0)
    g.test_result(t1, False, T0)
    assert g.pick_peers(5) == [IDS[2]]


def test_digest_hash_equal_iff_same_records():
    a, b = state(), GossipState(rec(1), rng=MidRandom())
    a.merge(PEER, [rec(1).wire, rec(2).wire], T0)
    b.merge(PEER, [rec(0).wire, rec(2).wire], T0)
    assert a.digest_hash() == b.digest_hash() and len(a.digest_hash()) == 16
    b.merge(PEER, [rec(2, seq=2).wire], T0)
    assert a.digest_hash() != b.digest_hash()
    a.merge(PEER, [rec(2, seq=2).wire], T0)
    assert a.digest_hash() == b.digest_hash()
    a.merge(PEER, [rec(3).wire], T0)
    assert a.digest_hash() != b.digest_hash()


def test_retest_rate_is_capped_for_big_tables():
    g = state(test_interval_ms=10_000, max_test_rate=0.5)  # 6 peers at 0.5/s: every 12 s
    g.merge(PEER, [rec(i).wire for i in range(1, 7)], T0)
    for t in g.due_tests(T0):
        g.test_result(t, True, T0)
    assert {e.next_test - T0 for e in g._table.values()} == {12_000}


def test_denied_nodes_are_refused_from_anyone():
    g = state(denied=[IDS[2]])
    r = g.merge(PEER, [rec(1).wire, rec(2).wire], T0)
    assert (r.accepted, r.rejected) == ([IDS[1]], [(1, "denied")])
    assert g.score(PEER) == 0  # relaying a denied node's record is not misbehaviour
    r = g.merge(IDS[2], [rec(3).wire], T0)
    assert (r.accepted, r.rejected) == ([], [(0, "banned")])
    assert [t.id for t in g.due_tests(T0)] == [IDS[1]]


def test_digest_hash_follows_expiry_and_own_reissue():
    g = state()
    g.merge(PEER, [rec(1, lifetime=1000).wire], T0)
    h1 = g.digest_hash()
    assert g.digest_hash() == h1  # cached, same answer
    g.expire(T0 + 1000)
    h2 = g.digest_hash()
    assert h2 != h1 and h2 == state().digest_hash()
    g.set_own(rec(0, seq=2))
    assert g.digest_hash() != h2


def test_records_with_refused_addresses_are_never_tested():
    from firmware.proto.records import address_allowed

    g = state(address_ok=lambda host: address_allowed(host, "203.0.114.5"))  # a public node
    r = g.merge(PEER, [rec(1).wire], T0)  # advertises 127.0.0.1: would probe our own machine
    assert (r.accepted, r.rejected) == ([], [(0, "address")])
    assert g.score(PEER) == 0 and g.refused == {"address": 1} and g.due_tests(T0) == []
