"""Durable tombstones: a recipient's delete stays a delete -- across restarts, against
anti-entropy and hand-off re-puts, and against the same message stored again."""

import sqlite3

import pytest
import trio

from firmware.proto.limits import MAX_FUTURE_TS, max_ttl
from firmware.store import StoreError

from .conftest import BASE_MS, DAY_MS, make_msg

R = b"R" * 32


async def test_deleted_message_is_handled_not_stored_even_after_reopen(open_store, nursery):
    store = open_store()
    await nursery.start(store.run)
    m = make_msg(1)
    assert (await store.put(m)).is_new
    assert await store.delete(R, 0, [m.hash]) == [m.hash]
    again = await store.put(m)  # anti-entropy, hand-off or the client again: same hash
    assert again == (False, m.expiry) and again.deleted
    assert store.stats()["count"] == 0 and store.stats()["tombstones"] == 1
    # a fresh process on the same file
    other = open_store()
    async with trio.open_nursery() as n:
        await n.start(other.run)
        r = await other.put(m)
        assert r.deleted and not r.is_new
        assert await other.is_deleted([m.hash, make_msg(2).hash]) == {m.hash}
        assert (await other.retrieve(R, 0, None, 10, 10**6))[0] == []
        assert other.stats()["tombstones"] == 1
        n.cancel_scope.cancel()


async def test_tombstone_is_written_in_the_same_transaction_as_the_delete(running, db_path):
    store = await running()
    m = make_msg(1)
    await store.put(m)
    with sqlite3.connect(db_path) as c:  # make every tombstone insert fail
        c.execute("CREATE TRIGGER no_tombstones BEFORE INSERT ON tombstones "
                  "BEGIN SELECT RAISE(ABORT, 'no tombstones today'); END")
    c.close()
    with pytest.raises(StoreError, match="no tombstones today"):
        await store.delete(R, 0, [m.hash])
    # the delete was rolled back with it: the message is still there, totals unchanged
    assert await store.get_many(R, 0, [m.hash]) == [m]
    assert (store.stats()["count"], store.stats()["tombstones"]) == (1, 0)


async def test_delete_before_the_message_arrives_still_blocks_it(running, now_ms, mock_clock):
    store = await running()
    m = make_msg(1, ns=5)
    assert await store.delete(R, 5, [m.hash]) == []  # not stored here (yet)
    assert (await store.put(m)).deleted
    [t] = await store.tombstones(R)
    assert (t.hash, t.ns, t.until) == (m.hash, 5, now_ms() + MAX_FUTURE_TS + max_ttl(5))


async def test_tombstone_lasts_until_any_copy_could_have_expired(running):
    store = await running()
    m = make_msg(1, ts=BASE_MS - DAY_MS, expiry=BASE_MS + DAY_MS)
    await store.put(m)
    await store.delete(R, 0, [m.hash], proof=b"signed delete")
    [t] = await store.tombstones(R)
    # not the stored expiry: another member may have extended it up to ts + max ttl
    assert t.until == m.ts + max_ttl(0)
    assert t.proof == b"signed delete"


async def test_a_claim_about_another_mailbox_blocks_nothing(running):
    """A delete signed by recipient A naming the hash of B's message (unknown here) must not
    keep B's message out: a tombstone only counts for its own mailbox."""
    store = await running()
    victim = make_msg(1, recipient=b"B" * 32)
    assert await store.delete(b"A" * 32, 0, [victim.hash]) == []
    r = await store.put(victim)
    assert r.is_new and not r.deleted
    # and the real owner's delete, made from the stored row, takes the tombstone over
    assert await store.delete(b"B" * 32, 0, [victim.hash]) == [victim.hash]
    assert (await store.put(victim)).deleted
    assert [t.recipient for t in await store.tombstones(b"B" * 32)] == [b"B" * 32]
    assert await store.tombstones(b"A" * 32) == []


async def test_hand_off_drops_copies_without_a_tombstone(running):
    store = await running()
    m = make_msg(1)
    await store.put(m)
    assert await store.drop_copies(R, 0, [m.hash]) == [m.hash]
    assert store.stats()["tombstones"] == 0
    assert (await store.put(m)).is_new  # this node may own it again later


async def test_expired_tombstones_are_swept(running, mock_clock):
    store = await running(sweep_every_s=3600)
    m = make_msg(1, ts=BASE_MS, expiry=BASE_MS + 60_000)
    await store.put(m)
    await store.delete(R, 0, [m.hash])
    mock_clock.jump(max_ttl(0) / 1000 - 1)
    await store.sweep_expired()
    assert store.stats()["tombstones"] == 1
    mock_clock.jump(1)
    await store.sweep_expired()
    assert store.stats()["tombstones"] == 0
    assert await store.is_deleted([m.hash]) == set()


async def test_tombstones_over_the_cap_drop_the_soonest_to_expire(running, mock_clock):
    store = await running(max_tombstones=3, sweep_batch=2)
    msgs = [make_msg(i, ts=BASE_MS + i * 120_000) for i in range(5)]  # later ts: later until
    for m in msgs:
        await store.delete(R, 0, [m.hash])
    for m in msgs:
        await store.put(m)  # all dead
    assert store.stats()["tombstones"] == 5
    await store.sweep_expired()
    assert store.stats()["tombstones"] == 3
    # unknown hashes: until = now + skew + max ttl, the same for all; ties by hash order
    assert len(await store.is_deleted([m.hash for m in msgs])) == 3


async def test_put_of_a_deleted_message_when_full_is_still_handled(running):
    store = await running(quota_bytes=150)
    m = make_msg(1, size=100)
    await store.put(m)
    await store.delete(R, 0, [m.hash])
    await store.put(make_msg(2, size=100))
    r = await store.put(m)  # over quota, but it is a deleted message: handled, not StoreFull
    assert r.deleted
