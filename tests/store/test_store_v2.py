"""Schema v2: migration from a v1 file, the owner's proof kept with each message, and a
retrieve that walks the insertion-order index instead of sorting the mailbox."""

import sqlite3
from contextlib import closing

import pytest

from firmware.store import SCHEMA_VERSION, Message, StoreOpenError, schema

from .conftest import BASE_MS, make_msg

R = b"R" * 32

# The v1 schema exactly as homenode 0.1.0 wrote it (frozen here: MIGRATIONS[0] may be read by
# the code under test, so the old-format file is built from this copy instead).
V1_DDL = """
CREATE TABLE messages (
    seq       INTEGER PRIMARY KEY,
    hash      BLOB NOT NULL,
    recipient BLOB NOT NULL,
    ns        INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    expiry    INTEGER NOT NULL,
    data      BLOB NOT NULL
);
CREATE UNIQUE INDEX messages_mailbox ON messages (recipient, ns, hash);
CREATE INDEX messages_expiry ON messages (expiry / 60000);
CREATE TABLE totals (
    id    INTEGER PRIMARY KEY CHECK (id = 0),
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT INTO totals (id, count, bytes) VALUES (0, 0, 0);
"""


def write_v1_file(path, msgs):
    with closing(sqlite3.connect(path, isolation_level=None)) as c:
        c.execute("PRAGMA page_size=1024")
        c.execute("PRAGMA journal_mode=WAL")
        c.executescript(V1_DDL)
        c.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
        c.execute("PRAGMA user_version=1")
        c.executemany("INSERT INTO messages (hash, recipient, ns, ts, expiry, data) "
                      "VALUES (?,?,?,?,?,?)",
                      [(m.hash, m.recipient, m.ns, m.ts, m.expiry, m.data) for m in msgs])
        c.execute("UPDATE totals SET count=?, bytes=?",
                  (len(msgs), sum(len(m.data) for m in msgs)))


async def test_v1_file_is_migrated_keeping_messages_order_and_totals(open_store, db_path, nursery):
    # insertion order differs from hash order and ts order; two mailboxes interleaved
    msgs = [make_msg(i, ts=BASE_MS - i, recipient=(R if i % 3 else b"S" * 32))
            for i in range(30)]
    write_v1_file(db_path, msgs)
    store = open_store()
    with closing(sqlite3.connect(db_path)) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type='index'")}
        assert {"messages_hash", "messages_mailbox_order", "messages_expiry"} <= indexes
        assert "messages_mailbox" not in indexes
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert (store.stats()["count"], store.stats()["bytes"], store.stats()["tombstones"]) == (
        30, sum(len(m.data) for m in msgs), 0)
    await nursery.start(store.run)
    mine = [m for m in msgs if m.recipient == R]
    got, more = await store.retrieve(R, 0, None, 5, 10**6)
    assert got == mine[:5] and more and all(m.proof is None for m in got)
    got, _ = await store.retrieve(R, 0, mine[4].hash, 100, 10**6)
    assert got == mine[5:]
    # the new features work on the migrated file
    assert await store.delete(R, 0, [mine[0].hash]) == [mine[0].hash]
    assert (await store.put(mine[0])).deleted
    new = make_msg(99, ns=7)
    new = Message(new.hash, R, 7, new.ts, new.expiry, new.data, b"sig")
    assert (await store.put(new)).is_new
    assert await store.get_by_hash([new.hash]) == [new]


async def test_a_duplicate_hash_across_mailboxes_in_a_v1_file_fails_cleanly(open_store, db_path):
    """v1 deduplicated per mailbox; v2 by hash alone (the hash covers the mailbox, so a real
    file never has this). Should one exist, the upgrade is refused and rolled back whole."""
    a = make_msg(1)
    b = Message(a.hash, b"Z" * 32, 0, a.ts, a.expiry, a.data)  # same hash, other mailbox
    write_v1_file(db_path, [a, b])
    with pytest.raises(StoreOpenError, match="rolled back: nothing was changed"):
        open_store()
    with closing(sqlite3.connect(db_path)) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        assert c.execute("SELECT count(*) FROM messages").fetchone()[0] == 2


async def test_proof_is_stored_and_returned_opaquely(running):
    store = await running()
    signed = make_msg(1, ns=3)
    signed = Message(signed.hash, R, 3, signed.ts, signed.expiry, signed.data, b"\x01" * 96)
    public = make_msg(2)
    for m in (signed, public):
        await store.put(m)
    assert await store.get_many(R, 3, [signed.hash]) == [signed]
    assert await store.get_by_hash([public.hash, signed.hash, b"\x00" * 32]) == [public, signed]
    assert (await store.retrieve(R, 3, None, 10, 10**6))[0] == [signed]
    assert (await store.retrieve(R, 0, None, 10, 10**6))[0][0].proof is None
    # the first copy wins: a later copy with another proof changes nothing
    other = Message(*[getattr(signed, f) for f in ("hash", "recipient", "ns", "ts", "expiry",
                                                    "data")], b"\x02" * 96)
    assert (await store.put(other)) == (False, signed.expiry)
    assert (await store.get_by_hash([signed.hash]))[0].proof == b"\x01" * 96


async def test_proof_must_be_bytes_of_sane_size(running):
    store = await running()
    m = make_msg(1)
    with pytest.raises(ValueError, match="proof"):
        await store.put(Message(m.hash, R, 0, m.ts, m.expiry, m.data, b"x" * 1025))
    with pytest.raises(ValueError, match="proof"):
        await store.put(Message(m.hash, R, 0, m.ts, m.expiry, m.data, "text"))


def test_retrieve_walks_the_insertion_order_index_without_sorting(tmp_path):
    """What makes a page cost independent of the mailbox size, checked on the query plan
    (bench/store_retrieve.py measures it)."""
    from firmware.store import MessageStore

    store = MessageStore.open(tmp_path / "m.sqlite3", quota_bytes=1 << 30, clock_ms=lambda: 0)
    try:
        plan = " ".join(r[3] for r in store._reader.execute(
            "EXPLAIN QUERY PLAN SELECT seq, length(data) FROM messages WHERE recipient=? AND "
            "ns=? AND seq>? AND expiry>? ORDER BY seq LIMIT ?", (R, 0, 0, 0, 10)))
    finally:
        store.close()
    assert "messages_mailbox_order" in plan and "rowid>?" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


async def test_retrieve_reads_data_only_for_what_it_returns(running, db_path):
    store = await running()
    msgs = [make_msg(i, size=1000) for i in range(5)]
    for m in msgs:
        await store.put(m)
    calls = []
    store._reader.set_trace_callback(calls.append)
    got, more = await store.retrieve(R, 0, None, 100, 2500)
    store._reader.set_trace_callback(None)
    assert got == msgs[:2] and more
    assert sum("SELECT hash, ts, expiry, data" in c for c in calls) == 2


async def test_retrieve_of_an_empty_mailbox_and_after_the_last_message(running):
    store = await running()
    assert await store.retrieve(R, 0, None, 10, 10**6) == ([], False)
    m = make_msg(1)
    await store.put(m)
    assert await store.retrieve(R, 0, m.hash, 10, 10**6) == ([], False)
