"""put / retrieve / delete / set_expiry / quota / reopen / concurrency on a real SQLite file."""

import sqlite3

import pytest
import trio

from firmware.store import StoreClosed, StoreFull

from .conftest import BASE_MS, DAY_MS, make_msg


async def test_put_then_retrieve_returns_the_message(running):
    store = await running(batch_ms=0)
    m = make_msg(1)
    assert await store.put(m) == (True, m.expiry)
    msgs, more = await store.retrieve(m.recipient, 0, None, 100, 900_000)
    assert msgs == [m]
    assert more is False


async def test_duplicate_hash_is_not_new_and_keeps_first_expiry(running):
    store = await running(batch_ms=0)
    m = make_msg(1)
    await store.put(m)
    again = make_msg(1, expiry=m.expiry + 5000)  # same hash, other expiry
    assert again.hash == m.hash
    assert await store.put(again) == (False, m.expiry)
    assert store.stats()["count"] == 1


async def test_duplicates_inside_one_batch(running):
    store = await running(batch_ms=10_000, batch_rows=4)
    m = make_msg(7)
    results = []

    async def put():
        results.append(await store.put(m))

    async with trio.open_nursery() as n:
        for _ in range(4):
            n.start_soon(put)
    assert sorted(results) == [(False, m.expiry)] * 3 + [(True, m.expiry)]
    assert store.stats()["count"] == 1
    assert store.stats()["bytes"] == len(m.data)


async def test_retrieve_pages_in_insertion_order_after_hash(running):
    store = await running(batch_ms=0)
    # insertion order deliberately differs from hash order and ts order
    msgs = [make_msg(i, ts=BASE_MS - i) for i in range(10)]
    for m in msgs:
        await store.put(m)
    got, more = await store.retrieve(b"R" * 32, 0, None, 4, 900_000)
    assert got == msgs[:4] and more
    got, more = await store.retrieve(b"R" * 32, 0, msgs[3].hash, 4, 900_000)
    assert got == msgs[4:8] and more
    got, more = await store.retrieve(b"R" * 32, 0, msgs[7].hash, 4, 900_000)
    assert got == msgs[8:] and not more
    got, more = await store.retrieve(b"R" * 32, 0, msgs[9].hash, 4, 900_000)
    assert got == [] and not more


async def test_retrieve_after_unknown_hash_starts_from_oldest(running):
    store = await running(batch_ms=0)
    msgs = [make_msg(i) for i in range(3)]
    for m in msgs:
        await store.put(m)
    got, _ = await store.retrieve(b"R" * 32, 0, b"\x00" * 32, 10, 900_000)
    assert got == msgs


async def test_retrieve_byte_bound_but_at_least_one(running):
    store = await running(batch_ms=0)
    msgs = [make_msg(i, size=1000) for i in range(5)]
    for m in msgs:
        await store.put(m)
    got, more = await store.retrieve(b"R" * 32, 0, None, 100, 2500)
    assert got == msgs[:2] and more
    got, more = await store.retrieve(b"R" * 32, 0, None, 100, 3000)
    assert got == msgs[:3] and more
    got, more = await store.retrieve(b"R" * 32, 0, None, 100, 10)  # larger than max_bytes
    assert got == msgs[:1] and more
    got, more = await store.retrieve(b"R" * 32, 0, msgs[3].hash, 100, 10)
    assert got == msgs[4:] and not more


async def test_retrieve_separates_recipients_and_namespaces(running):
    store = await running(batch_ms=0)
    a0 = make_msg(1, recipient=b"A" * 32, ns=0)
    a5 = make_msg(2, recipient=b"A" * 32, ns=-5)
    b0 = make_msg(3, recipient=b"B" * 32, ns=0)
    for m in (a0, a5, b0):
        await store.put(m)
    assert (await store.retrieve(b"A" * 32, 0, None, 10, 10**6))[0] == [a0]
    assert (await store.retrieve(b"A" * 32, -5, None, 10, 10**6))[0] == [a5]
    assert (await store.retrieve(b"B" * 32, 0, None, 10, 10**6))[0] == [b0]
    # a hash of another mailbox is "unknown" there: start from the oldest
    assert (await store.retrieve(b"A" * 32, 0, b0.hash, 10, 10**6))[0] == [a0]


async def test_delete_only_own_mailbox_and_reports_deleted(running):
    store = await running(batch_ms=0)
    mine = [make_msg(i) for i in range(3)]
    other = make_msg(9, recipient=b"O" * 32)
    for m in [*mine, other]:
        await store.put(m)
    deleted = await store.delete(b"R" * 32, 0, [mine[0].hash, other.hash, mine[2].hash,
                                                 mine[0].hash, b"\x01" * 32])
    assert deleted == [mine[0].hash, mine[2].hash]
    assert (await store.retrieve(b"R" * 32, 0, None, 10, 10**6))[0] == [mine[1]]
    assert (await store.retrieve(b"O" * 32, 0, None, 10, 10**6))[0] == [other]
    st = store.stats()
    assert (st["count"], st["bytes"]) == (2, len(mine[1].data) + len(other.data))


async def test_set_expiry_updates_and_respects_max_ttl(running):
    store = await running(batch_ms=0)
    m1, m2 = make_msg(1), make_msg(2, ts=BASE_MS - DAY_MS)
    await store.put(m1)
    await store.put(m2)
    new = BASE_MS + 2 * DAY_MS
    updated = await store.set_expiry(b"R" * 32, 0, [m1.hash, m2.hash, b"\x02" * 32], new,
                                     max_ttl_ms=2 * DAY_MS)
    assert updated == [m1.hash]  # m2.ts + 2 days < new
    got = {m.hash: m.expiry for m in (await store.retrieve(b"R" * 32, 0, None, 10, 10**6))[0]}
    assert got == {m1.hash: new, m2.hash: m2.expiry}
    assert await store.set_expiry(b"X" * 32, 0, [m1.hash], new + 1) == []


async def test_quota_full_raises_and_stores_nothing(running):
    store = await running(batch_ms=0, quota_bytes=250)
    await store.put(make_msg(1, size=100))
    await store.put(make_msg(2, size=100))
    with pytest.raises(StoreFull, match="quota"):
        await store.put(make_msg(3, size=100))
    assert store.stats()["count"] == 2
    # a duplicate of a stored message is still answered when full
    assert (await store.put(make_msg(1, size=100)))[0] is False
    # room again after a delete
    await store.delete(b"R" * 32, 0, [make_msg(1, size=100).hash])
    assert (await store.put(make_msg(3, size=100)))[0] is True


async def test_quota_counts_pending_puts(running, autojump_clock):
    store = await running(batch_ms=10_000, batch_rows=1000, quota_bytes=250)
    errors, acks = [], []

    async def put(i):
        try:
            acks.append(await store.put(make_msg(i, size=100)))
        except StoreFull:
            errors.append(i)

    async with trio.open_nursery() as n:
        for i in range(3):
            n.start_soon(put, i)
        await trio.testing.wait_all_tasks_blocked()
        await store.flush()
    assert len(acks) == 2 and len(errors) == 1


async def test_reopen_keeps_data_and_totals(open_store, db_path):
    store = open_store(batch_ms=0)
    msgs = [make_msg(i) for i in range(5)]
    async with trio.open_nursery() as n:
        await n.start(store.run)
        for m in msgs:
            await store.put(m)
        await store.delete(b"R" * 32, 0, [msgs[0].hash])
        n.cancel_scope.cancel()
    store.close()
    again = open_store()
    assert again.stats()["count"] == 4
    assert again.stats()["bytes"] == sum(len(m.data) for m in msgs[1:])
    assert (await again.retrieve(b"R" * 32, 0, None, 10, 10**6))[0] == msgs[1:]


async def test_many_concurrent_putters(running, db_path):
    store = await running(batch_ms=5)
    msgs = [make_msg(i, recipient=bytes([i % 7]) * 32, size=300) for i in range(700)]
    results = {}
    order = []  # put() queues its message before its first checkpoint: this is queue order

    async def put(m):
        order.append(m.hash)
        results[m.hash] = await store.put(m)

    async with trio.open_nursery() as n:
        for m in msgs:
            n.start_soon(put, m)
    assert all(results[m.hash] == (True, m.expiry) for m in msgs)
    st = store.stats()
    assert st["count"] == 700 and st["ops_committed"] == 700
    assert st["commits"] < 700 / 8  # they were grouped
    with sqlite3.connect(db_path) as c:
        assert c.execute("SELECT count(*), sum(length(data)) FROM messages").fetchone() == (
            700, 700 * 300)
    for r in range(7):
        got, more = await store.retrieve(bytes([r]) * 32, 0, None, 1000, 10**6)
        mailbox = {m.hash for m in msgs if m.recipient == bytes([r]) * 32}
        assert [m.hash for m in got] == [h for h in order if h in mailbox]
        assert not more


async def test_put_without_running_service_raises(open_store):
    store = open_store()
    with pytest.raises(StoreClosed, match="not running"):
        await store.put(make_msg(1))


async def test_replication_helpers(running):
    store = await running(batch_ms=0)
    a, b = make_msg(1, recipient=b"A" * 32), make_msg(2, recipient=b"B" * 32, ns=3)
    await store.put(a)
    await store.put(b)
    assert sorted(await store.recipients()) == [b"A" * 32, b"B" * 32]
    assert await store.hashes_for(b"B" * 32) == [(3, b.hash, b.expiry)]
    assert await store.get_many(b"B" * 32, 3, [b.hash, b"\x00" * 32, a.hash]) == [b]
    assert await store.get_many(b"A" * 32, 0, [b.hash, a.hash]) == [a]


async def test_batch_mixing_stored_new_and_repeated_messages(running, mock_clock):
    store = await running(batch_ms=50, batch_rows=5)
    old, a, b = make_msg(1), make_msg(2), make_msg(3)
    async with trio.open_nursery() as n:
        n.start_soon(store.put, old)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(0.05)
    results = {}

    async def put(key, m):
        results[key] = await store.put(m)

    async with trio.open_nursery() as n:  # one batch of 5, in this order
        for key, m in [("old", old), ("a", a), ("a2", a), ("del", None), ("b", b)]:
            if m is None:
                n.start_soon(store.delete, b"R" * 32, 0, [old.hash])
            else:
                n.start_soon(put, key, m)
            await trio.testing.wait_all_tasks_blocked()
    assert store.stats()["commits"] == 2
    assert results == {"old": (False, old.expiry), "a": (True, a.expiry),
                       "a2": (False, a.expiry), "b": (True, b.expiry)}
    assert (store.stats()["count"], store.stats()["bytes"]) == (2, 200)
    got, _ = await store.retrieve(b"R" * 32, 0, None, 10, 10**6)
    assert got == [a, b]
