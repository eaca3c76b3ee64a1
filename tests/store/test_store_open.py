"""Opening: schema migrations, and refusing files we must not touch (they stay byte-identical)."""

import os
import sqlite3

import pytest
import trio

from firmware.store import SCHEMA_VERSION, StoreOpenError, schema

from .conftest import make_msg


def user_version(path) -> int:
    with sqlite3.connect(path) as c:
        return c.execute("PRAGMA user_version").fetchone()[0]


async def test_new_file_gets_current_schema_in_wal_mode(open_store, db_path):
    open_store().close()
    assert user_version(db_path) == SCHEMA_VERSION
    with sqlite3.connect(db_path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("content", [
    b"hello, this is my shopping list\n" * 100,
    os.urandom(8192),
    b"SQLite format 3\x00" + b"\xff" * 8000,  # right magic, garbage after it
])
async def test_refuses_non_sqlite_or_corrupt_file_untouched(open_store, db_path, content):
    db_path.write_bytes(content)
    with pytest.raises(StoreOpenError) as info:
        open_store()
    msg = str(info.value)
    assert str(db_path) in msg and "mv " in msg and "Nothing was changed" in msg
    assert db_path.read_bytes() == content
    assert not os.path.exists(f"{db_path}-wal")


async def test_refuses_someone_elses_sqlite_database(open_store, db_path):
    with sqlite3.connect(db_path) as c:
        c.execute("CREATE TABLE recipes (name TEXT)")
        c.execute("INSERT INTO recipes VALUES ('soup')")
    c.close()
    before = db_path.read_bytes()
    with pytest.raises(StoreOpenError, match=r"not a homenode message store .*recipes"):
        open_store()
    assert db_path.read_bytes() == before


async def test_refuses_newer_schema_version(open_store, db_path):
    open_store().close()
    with sqlite3.connect(db_path) as c:
        c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(StoreOpenError, match=r"newer homenode .*Upgrade homenode"):
        open_store()
    assert user_version(db_path) == SCHEMA_VERSION + 1


async def _put_some(store, msgs):
    async with trio.open_nursery() as n:
        await n.start(store.run)
        for m in msgs:
            await store.put(m)
        n.cancel_scope.cancel()


async def test_migration_upgrades_and_keeps_messages(open_store, db_path, monkeypatch):
    store = open_store(batch_ms=0)
    msgs = [make_msg(i) for i in range(3)]
    await _put_some(store, msgs)
    store.close()
    v2 = "ALTER TABLE messages ADD COLUMN origin BLOB; CREATE INDEX t ON messages (ts)"
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, v2])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    again = open_store()
    assert user_version(db_path) == SCHEMA_VERSION + 1
    assert (await again.retrieve(b"R" * 32, 0, None, 10, 10**6))[0] == msgs
    with sqlite3.connect(db_path) as c:
        assert "origin" in [r[1] for r in c.execute("PRAGMA table_info(messages)")]


async def test_failed_migration_rolls_back(open_store, db_path, monkeypatch):
    store = open_store(batch_ms=0)
    await _put_some(store, [make_msg(1)])
    store.close()
    bad = "ALTER TABLE messages ADD COLUMN origin BLOB; THIS IS NOT SQL"
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, bad])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreOpenError, match=r"cannot upgrade .* rolled back: nothing was changed"):
        open_store()
    assert user_version(db_path) == SCHEMA_VERSION
    with sqlite3.connect(db_path) as c:
        assert "origin" not in [r[1] for r in c.execute("PRAGMA table_info(messages)")]
        assert c.execute("SELECT count(*) FROM messages").fetchone()[0] == 1


async def test_missing_directory_is_a_clear_error(open_store, tmp_path):
    path = tmp_path / "no-such-dir" / "messages.sqlite3"
    with pytest.raises(StoreOpenError, match=r"directory \S*no-such-dir does not exist"):
        open_store(path=path)

