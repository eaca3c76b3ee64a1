"""The SQL behind each store operation, as blocking functions of an open connection.

Write functions run inside the committer's batch transaction and return `(result, d_count,
d_bytes)` so the store can keep its running totals exact; read functions run on the reader
connection. Nothing here knows about trio.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from .schema import EXPIRY_BUCKET_MS


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message; values are already validated by the protocol layer."""

    hash: bytes  # 32 bytes, BLAKE2b-256 over recipient, ns, ts, data
    recipient: bytes  # 32 bytes
    ns: int
    ts: int  # ms since the epoch
    expiry: int  # ms since the epoch
    data: bytes


WriteResult = tuple[object, int, int]


def put_many(conn: sqlite3.Connection, msgs: list[Message]) -> list[WriteResult]:
    """Insert those not already stored; per message the result is `(is_new, expiry)`.

    One executemany for the lot (the common case: all new). Only when some were already there,
    look each one up: rows this call inserted have a rowid above the largest one before it.
    """
    before = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
    cur = conn.executemany(
        "INSERT INTO messages (hash, recipient, ns, ts, expiry, data) VALUES (?,?,?,?,?,?) "
        "ON CONFLICT (recipient, ns, hash) DO NOTHING",
        [(m.hash, m.recipient, m.ns, m.ts, m.expiry, m.data) for m in msgs],
    )
    if cur.rowcount == len(msgs):
        return [((True, m.expiry), 1, len(m.data)) for m in msgs]
    out: list[WriteResult] = []
    seen: set[tuple[bytes, int, bytes]] = set()
    for m in msgs:
        key = (m.recipient, m.ns, m.hash)
        seq, expiry = conn.execute(
            "SELECT seq, expiry FROM messages WHERE recipient=? AND ns=? AND hash=?", key
        ).fetchone()
        if seq > before and key not in seen:
            out.append(((True, expiry), 1, len(m.data)))
        else:
            out.append(((False, expiry), 0, 0))
        seen.add(key)
    return out


def delete(conn: sqlite3.Connection, recipient: bytes, ns: int, hashes: Iterable[bytes]) -> WriteResult:
    deleted: list[bytes] = []
    freed = 0
    for h in dict.fromkeys(hashes):
        row = conn.execute(
            "DELETE FROM messages WHERE hash=? AND recipient=? AND ns=? RETURNING length(data)",
            (h, recipient, ns),
        ).fetchone()
        if row is not None:
            deleted.append(h)
            freed += row[0]
    return deleted, -len(deleted), -freed


def set_expiry(
    conn: sqlite3.Connection,
    recipient: bytes,
    ns: int,
    hashes: Iterable[bytes],
    expiry: int,
    now: int,
    max_ttl_ms: int | None,
) -> WriteResult:
    limit = (1 << 62) if max_ttl_ms is None else max_ttl_ms
    updated: list[bytes] = []
    for h in dict.fromkeys(hashes):
        row = conn.execute(
            "UPDATE messages SET expiry=? WHERE hash=? AND recipient=? AND ns=? "
            "AND expiry>? AND ts+?>=? RETURNING 1",
            (expiry, h, recipient, ns, now, limit, expiry),
        ).fetchone()
        if row is not None:
            updated.append(h)
    return updated, 0, 0


def delete_by_expiry(
    conn: sqlite3.Connection, *, now: int, expired_only: bool, limit: int, want_bytes: int | None
) -> WriteResult:
    """Delete up to `limit` rows: those expired at `now`, or (eviction, `expired_only=False`) in
    order of expiry minute until `want_bytes` are freed. Result `(rows, bytes)` deleted."""
    if expired_only:
        rows = conn.execute(
            "SELECT seq, length(data) FROM messages WHERE expiry / 60000 <= ? AND expiry <= ? "
            "ORDER BY expiry / 60000 LIMIT ?",
            (now // EXPIRY_BUCKET_MS, now, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT seq, length(data) FROM messages ORDER BY expiry / 60000 LIMIT ?", (limit,)
        ).fetchall()
    freed = 0
    n = 0
    for seq, size in rows:
        if want_bytes is not None and freed >= want_bytes:
            break
        conn.execute("DELETE FROM messages WHERE seq=?", (seq,))
        freed += size
        n += 1
    return (n, freed), -n, -freed


def add_totals(conn: sqlite3.Connection, d_count: int, d_bytes: int) -> None:
    conn.execute(
        "UPDATE totals SET count=count+?, bytes=bytes+? WHERE id=0", (d_count, d_bytes)
    )


def read_totals(conn: sqlite3.Connection) -> tuple[int, int]:
    count, nbytes = conn.execute("SELECT count, bytes FROM totals WHERE id=0").fetchone()
    return count, nbytes


def retrieve(
    conn: sqlite3.Connection,
    recipient: bytes,
    ns: int,
    after: bytes | None,
    max_count: int,
    max_bytes: int,
    now: int,
) -> tuple[list[Message], bool]:
    """Messages stored after `after` (from the start if it is None or unknown), oldest first.

    The mailbox index is in hash order, so this first reads the mailbox's row ids from the index
    alone and sorts those (cheap integers), then reads only the rows it returns.
    """
    after_seq = 0
    if after is not None:
        row = conn.execute(
            "SELECT seq FROM messages WHERE recipient=? AND ns=? AND hash=?", (recipient, ns, after)
        ).fetchone()
        if row is not None:
            after_seq = row[0]
    out: list[Message] = []
    total = 0
    while True:
        # sorted row ids, at most as many as could still be returned (SQLite keeps a top-N heap)
        want = max_count + 1 - len(out)
        seqs = conn.execute(
            "SELECT seq FROM messages WHERE recipient=? AND ns=? AND seq>? ORDER BY seq LIMIT ?",
            (recipient, ns, after_seq, want),
        ).fetchall()
        for (seq,) in seqs:
            row = conn.execute(
                "SELECT hash, ts, expiry, data FROM messages WHERE seq=? AND expiry>?", (seq, now)
            ).fetchone()
            if row is None:
                continue  # expired (or deleted meanwhile)
            h, ts, expiry, data = row
            if out and (len(out) >= max_count or total + len(data) > max_bytes):
                return out, True
            out.append(Message(h, recipient, ns, ts, expiry, data))
            total += len(data)
        if len(seqs) < want:
            return out, False
        after_seq = seqs[-1][0]  # skipped expired rows: fetch the next ids


def get_many(conn: sqlite3.Connection, recipient: bytes, ns: int, hashes: Iterable[bytes]) -> list[Message]:
    out = []
    for h in dict.fromkeys(hashes):
        row = conn.execute(
            "SELECT ts, expiry, data FROM messages WHERE recipient=? AND ns=? AND hash=?",
            (recipient, ns, h),
        ).fetchone()
        if row is not None:
            out.append(Message(h, recipient, ns, *row))
    return out


def hashes_for(conn: sqlite3.Connection, recipient: bytes, now: int) -> list[tuple[int, bytes, int]]:
    return conn.execute(
        "SELECT ns, hash, expiry FROM messages WHERE recipient=? AND expiry>? ORDER BY ns, seq",
        (recipient, now),
    ).fetchall()


def recipients(conn: sqlite3.Connection) -> list[bytes]:
    return [r[0] for r in conn.execute("SELECT DISTINCT recipient FROM messages")]
