"""The SQL behind each store operation, as blocking functions of an open connection.

Write functions run inside the committer's batch transaction and return `(result, d_count,
d_bytes)` so the store can keep its running totals exact; read functions run on the reader
connection. Nothing here knows about trio.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass


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


def put(conn: sqlite3.Connection, msg: Message) -> WriteResult:
    """Insert unless the hash is already stored; result `(is_new, expiry)`."""
    cur = conn.execute(
        "INSERT INTO messages (hash, recipient, ns, ts, expiry, data) VALUES (?,?,?,?,?,?) "
        "ON CONFLICT (hash) DO NOTHING",
        (msg.hash, msg.recipient, msg.ns, msg.ts, msg.expiry, msg.data),
    )
    if cur.rowcount == 1:
        return (True, msg.expiry), 1, len(msg.data)
    row = conn.execute("SELECT expiry FROM messages WHERE hash=?", (msg.hash,)).fetchone()
    return (False, row[0]), 0, 0


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
    conn: sqlite3.Connection, *, before: int | None, limit: int, want_bytes: int | None
) -> WriteResult:
    """Delete up to `limit` rows in expiry order: those expired at `before`, or (eviction) the
    soonest to expire until `want_bytes` are freed. Result `(rows, bytes)` deleted."""
    if before is not None:
        rows = conn.execute(
            "SELECT seq, length(data) FROM messages WHERE expiry<=? ORDER BY expiry LIMIT ?",
            (before, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT seq, length(data) FROM messages ORDER BY expiry LIMIT ?", (limit,)
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
    """Messages stored after `after` (from the start if it is None or unknown), oldest first."""
    after_seq = 0
    if after is not None:
        row = conn.execute(
            "SELECT seq FROM messages WHERE hash=? AND recipient=? AND ns=?", (after, recipient, ns)
        ).fetchone()
        if row is not None:
            after_seq = row[0]
    cur = conn.execute(
        "SELECT hash, ts, expiry, data FROM messages "
        "WHERE recipient=? AND ns=? AND seq>? AND expiry>? ORDER BY seq",
        (recipient, ns, after_seq, now),
    )
    out: list[Message] = []
    total = 0
    more = False
    try:
        for h, ts, expiry, data in cur:
            if out and (len(out) >= max_count or total + len(data) > max_bytes):
                more = True
                break
            out.append(Message(h, recipient, ns, ts, expiry, data))
            total += len(data)
    finally:
        cur.close()  # ends the read transaction so checkpoints are not held back
    return out, more


def get_many(conn: sqlite3.Connection, hashes: Iterable[bytes]) -> list[Message]:
    out = []
    for h in dict.fromkeys(hashes):
        row = conn.execute(
            "SELECT recipient, ns, ts, expiry, data FROM messages WHERE hash=?", (h,)
        ).fetchone()
        if row is not None:
            out.append(Message(h, *row))
    return out


def hashes_for(conn: sqlite3.Connection, recipient: bytes, now: int) -> list[tuple[int, bytes, int]]:
    return conn.execute(
        "SELECT ns, hash, expiry FROM messages WHERE recipient=? AND expiry>? ORDER BY ns, seq",
        (recipient, now),
    ).fetchall()


def recipients(conn: sqlite3.Connection) -> list[bytes]:
    return [r[0] for r in conn.execute("SELECT DISTINCT recipient FROM messages")]
