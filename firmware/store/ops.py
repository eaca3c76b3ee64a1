"""The SQL behind each store operation, as blocking functions of an open connection.

Write functions run inside the committer's batch transaction and return a `Change` (their result
plus how the running totals move) so the store can keep its totals exact; read functions run on
the reader connection. Nothing here knows about trio.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from firmware.proto.limits import MAX_FUTURE_TS, max_ttl

from .schema import EXPIRY_BUCKET_MS

MAX_PROOF_BYTES = 1024  # opaque to the store; the bound only keeps a row's size sane
_IN_CHUNK = 500  # hashes per `IN (...)` query


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message; values are already validated by the protocol layer.

    `proof` is opaque to the store: the owner's signature material for a private namespace
    (None for namespace 0 and for messages stored before proofs were kept). It is stored and
    returned with the message, never interpreted.
    """

    hash: bytes  # 32 bytes, BLAKE2b-256 over recipient, ns, ts, data
    recipient: bytes  # 32 bytes
    ns: int
    ts: int  # ms since the epoch
    expiry: int  # ms since the epoch
    data: bytes
    proof: bytes | None = None


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deleted message's hash, kept until no copy of the message can be alive anywhere."""

    hash: bytes
    recipient: bytes
    ns: int
    until: int  # ms since the epoch
    proof: bytes | None = None  # opaque, as Message.proof (e.g. the signed delete)


class PutResult(tuple):
    """What `put` answers: unpacks as the `(is_new, expiry)` pair it always returned.

    `deleted` is True when the hash has a tombstone in this mailbox: the message was deleted by
    its recipient and is *not* stored again ("handled, not stored"); `is_new` is then False and
    `expiry` is the one the caller asked for.
    """

    def __new__(cls, is_new: bool, expiry: int, deleted: bool = False):
        self = super().__new__(cls, (is_new, expiry))
        self.deleted = deleted
        return self

    @property
    def is_new(self) -> bool:
        return self[0]

    @property
    def expiry(self) -> int:
        return self[1]

    def __repr__(self):
        return f"PutResult(is_new={self[0]}, expiry={self[1]}, deleted={self.deleted})"


class Change(NamedTuple):
    result: object
    count: int = 0  # messages added (negative: removed)
    bytes: int = 0  # data bytes added (negative: removed)
    tombstones: int = 0  # tombstones added (negative: removed)


def _chunks(items: list, n: int = _IN_CHUNK):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _tombstoned(conn: sqlite3.Connection, msgs: list[Message]) -> set[bytes]:
    """Hashes among `msgs` with a tombstone of the same mailbox (a tombstone made from a claim
    about another mailbox must not block somebody else's message)."""
    mailbox = {m.hash: (m.recipient, m.ns) for m in msgs}
    out = set()
    for chunk in _chunks(list(mailbox)):
        rows = conn.execute(
            f"SELECT hash, recipient, ns FROM tombstones WHERE hash IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        out.update(h for h, r, ns in rows if mailbox[h] == (r, ns))
    return out


def put_many(conn: sqlite3.Connection, msgs: list[Message]) -> list[Change]:
    """Insert those neither stored nor deleted; per message the result is a PutResult.

    One executemany for the lot (the common case: all new). Only when some were already there,
    look each one up: rows this call inserted have a rowid above the largest one before it.
    """
    dead = _tombstoned(conn, msgs)
    live = [m for m in msgs if m.hash not in dead]
    before = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
    cur = conn.executemany(
        "INSERT INTO messages (hash, recipient, ns, ts, expiry, data, proof) "
        "VALUES (?,?,?,?,?,?,?) ON CONFLICT (hash) DO NOTHING",
        [(m.hash, m.recipient, m.ns, m.ts, m.expiry, m.data, m.proof) for m in live],
    )
    if not dead and cur.rowcount == len(msgs):
        return [Change(PutResult(True, m.expiry), 1, len(m.data)) for m in msgs]
    out: list[Change] = []
    seen: set[bytes] = set()
    for m in msgs:
        if m.hash in dead:
            out.append(Change(PutResult(False, m.expiry, deleted=True)))
            continue
        seq, expiry = conn.execute(
            "SELECT seq, expiry FROM messages WHERE hash=?", (m.hash,)
        ).fetchone()
        if seq > before and m.hash not in seen:
            out.append(Change(PutResult(True, expiry), 1, len(m.data)))
        else:
            out.append(Change(PutResult(False, expiry)))
        seen.add(m.hash)
    return out


def _tombstone(
    conn: sqlite3.Connection, h: bytes, recipient: bytes, ns: int, until: int,
    proof: bytes | None, *, from_row: bool,
) -> int:
    """Record (or extend) a tombstone; returns 1 if a new one was added.

    One made from a stored row (its mailbox is certain) replaces a tombstone of another
    mailbox; one for a hash not stored here (an unverifiable claim) never does.
    """
    old = conn.execute("SELECT recipient, ns FROM tombstones WHERE hash=?", (h,)).fetchone()
    if old is None:
        conn.execute(
            "INSERT INTO tombstones (hash, recipient, ns, until, proof) VALUES (?,?,?,?,?)",
            (h, recipient, ns, until, proof),
        )
        return 1
    if tuple(old) == (recipient, ns) or from_row:
        conn.execute(
            "UPDATE tombstones SET recipient=?, ns=?, until=max(until, ?), "
            "proof=coalesce(?, proof) WHERE hash=?",
            (recipient, ns, until, proof, h),
        )
    return 0


def delete(
    conn: sqlite3.Connection, recipient: bytes, ns: int, hashes: Iterable[bytes], now: int,
    *, tombstone: bool, proof: bytes | None = None,
) -> Change:
    """Delete those of `hashes` stored for (recipient, ns); result: the hashes deleted.

    With `tombstone`, every named hash -- stored here or not, since the delete may arrive before
    the message does -- gets a tombstone in the same transaction, kept until the latest moment
    any copy could expire: ts + the namespace's max ttl for a stored message; for one never
    seen here, now + max ttl + the allowed clock skew.
    """
    deleted: list[bytes] = []
    freed = added = 0
    for h in dict.fromkeys(hashes):
        row = conn.execute(
            "DELETE FROM messages WHERE hash=? AND recipient=? AND ns=? "
            "RETURNING length(data), ts",
            (h, recipient, ns),
        ).fetchone()
        if row is not None:
            deleted.append(h)
            freed += row[0]
        if tombstone:
            until = (row[1] if row is not None else now + MAX_FUTURE_TS) + max_ttl(ns)
            added += _tombstone(conn, h, recipient, ns, until, proof, from_row=row is not None)
    return Change(deleted, -len(deleted), -freed, added)


def set_expiry(
    conn: sqlite3.Connection,
    recipient: bytes,
    ns: int,
    hashes: Iterable[bytes],
    expiry: int,
    now: int,
    max_ttl_ms: int | None,
) -> Change:
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
    return Change(updated)


def delete_by_expiry(
    conn: sqlite3.Connection, *, now: int, expired_only: bool, limit: int, want_bytes: int | None
) -> Change:
    """Delete up to `limit` rows: those expired at `now`, or (eviction, `expired_only=False`) in
    order of expiry minute until `want_bytes` are freed. Result `(rows, bytes)` deleted.

    This is the eviction order (the storage guard decides how much, the store which): expired
    first, then soonest to expire, at one-minute granularity so the index stays append-only.
    """
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
    return Change((n, freed), -n, -freed)


def sweep_tombstones(conn: sqlite3.Connection, *, now: int, limit: int, over: int) -> Change:
    """Drop up to `limit` tombstones: expired ones, and (`over` > 0) that many more of those
    expiring soonest, to keep the table under its cap. Result: how many were dropped."""
    rows = conn.execute(
        "SELECT hash, until FROM tombstones ORDER BY until / 60000 LIMIT ?", (limit,)
    ).fetchall()
    gone = [h for h, until in rows if until <= now]
    extra = [h for h, until in rows if until > now][:max(0, over - len(gone))]
    for h in gone + extra:
        conn.execute("DELETE FROM tombstones WHERE hash=?", (h,))
    n = len(gone) + len(extra)
    return Change(n, tombstones=-n)


def add_totals(conn: sqlite3.Connection, d_count: int, d_bytes: int, d_tombstones: int) -> None:
    conn.execute(
        "UPDATE totals SET count=count+?, bytes=bytes+?, tombstones=tombstones+? WHERE id=0",
        (d_count, d_bytes, d_tombstones),
    )


def read_totals(conn: sqlite3.Connection) -> tuple[int, int, int]:
    return conn.execute("SELECT count, bytes, tombstones FROM totals WHERE id=0").fetchone()


def freelist_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of free pages inside the file: room new rows take without growing it."""
    return conn.execute(
        "SELECT freelist_count * page_size FROM pragma_freelist_count(), pragma_page_size()"
    ).fetchone()[0]


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

    The (recipient, ns) index lists a mailbox in insertion order (its entries end in the
    rowid), so a page walks just past its own entries: the cost does not grow with the mailbox.
    Sizes come first (from the row header) and data only for the rows returned, so a page never
    reads data it does not return.
    """
    after_seq = 0
    if after is not None:
        row = conn.execute(
            "SELECT seq FROM messages WHERE hash=? AND recipient=? AND ns=?", (after, recipient, ns)
        ).fetchone()
        if row is not None:
            after_seq = row[0]
    walk = conn.execute(
        "SELECT seq, length(data) FROM messages WHERE recipient=? AND ns=? AND seq>? "
        "AND expiry>? ORDER BY seq LIMIT ?",
        (recipient, ns, after_seq, now, max_count + 1),
    )
    chosen: list[int] = []
    total = 0
    more = False
    for seq, size in walk:
        if chosen and (len(chosen) >= max_count or total + size > max_bytes):
            more = True
            break
        chosen.append(seq)
        total += size
    walk.close()
    out = []
    for seq in chosen:
        h, ts, expiry, data, proof = conn.execute(
            "SELECT hash, ts, expiry, data, proof FROM messages WHERE seq=?", (seq,)
        ).fetchone()
        out.append(Message(h, recipient, ns, ts, expiry, data, proof))
    return out, more


def get_many(conn: sqlite3.Connection, recipient: bytes, ns: int, hashes: Iterable[bytes]) -> list[Message]:
    out = []
    for h in dict.fromkeys(hashes):
        row = conn.execute(
            "SELECT ts, expiry, data, proof FROM messages WHERE hash=? AND recipient=? AND ns=?",
            (h, recipient, ns),
        ).fetchone()
        if row is not None:
            out.append(Message(h, recipient, ns, *row))
    return out


def get_by_hash(conn: sqlite3.Connection, hashes: Iterable[bytes]) -> list[Message]:
    out = []
    for h in dict.fromkeys(hashes):
        row = conn.execute(
            "SELECT recipient, ns, ts, expiry, data, proof FROM messages WHERE hash=?", (h,)
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


def is_deleted(conn: sqlite3.Connection, hashes: Iterable[bytes], now: int) -> set[bytes]:
    out: set[bytes] = set()
    for chunk in _chunks(list(dict.fromkeys(hashes))):
        out.update(r[0] for r in conn.execute(
            f"SELECT hash FROM tombstones WHERE hash IN ({','.join('?' * len(chunk))}) "
            "AND until>?", [*chunk, now]))
    return out


def tombstones_for(conn: sqlite3.Connection, recipient: bytes, now: int) -> list[Tombstone]:
    return [Tombstone(h, recipient, ns, until, proof) for ns, h, until, proof in conn.execute(
        "SELECT ns, hash, until, proof FROM tombstones WHERE recipient=? AND until>? "
        "ORDER BY ns, hash", (recipient, now))]


def tombstones_by_hash(conn: sqlite3.Connection, hashes: Iterable[bytes], now: int) -> list[Tombstone]:
    out: list[Tombstone] = []
    for chunk in _chunks(list(dict.fromkeys(hashes))):
        out += [Tombstone(h, r, ns, until, proof) for h, r, ns, until, proof in conn.execute(
            "SELECT hash, recipient, ns, until, proof FROM tombstones WHERE hash IN "
            f"({','.join('?' * len(chunk))}) AND until>?", [*chunk, now])]
    return out
