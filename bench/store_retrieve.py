"""Cost of one `retrieve` page in a small and a huge mailbox of the same store, and the ratio.

One store file holds mailbox S (--small messages, default 1,000) and mailbox L (--large,
default 100,000), interleaved as they would arrive, 1 KiB each. For each mailbox the benchmark
asks --pages pages of 100 messages after a randomly chosen message (so pages come from the whole
mailbox, not only its start) and times `firmware.store.ops.retrieve` on the store's reader
connection: the SQL and row reading the store does per page, CPU only (thread time), no event
loop. Target: page(L) / page(S) <= 2. With --v1 the same rows are also loaded into the v1 layout
and paged with the v1 query (mailbox index in hash order: sort the mailbox's row ids per page),
to show what it replaced.

    .venv/bin/python bench/store_retrieve.py [--small 1000] [--large 100000] [--pages 300]
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from firmware.store import MessageStore, ops  # noqa: E402
from firmware.store import schema as store_schema  # noqa: E402

NOW = 1_700_000_000_000
DAY_MS = 86_400_000
SMALL, LARGE = b"S" * 32, b"L" * 32


def rows(n_small: int, n_large: int, size: int, seed: int):
    """(hash, recipient, ns, ts, expiry, data) in arrival order: the small mailbox's messages
    spread evenly among the large one's."""
    rng = random.Random(seed)
    total = n_small + n_large
    small_at = set(rng.sample(range(total), n_small))
    for i in range(total):
        rec = SMALL if i in small_at else LARGE
        ts = NOW - DAY_MS + i
        data = rng.randbytes(size)
        h = hashlib.blake2b(rec + b"\0\0" + ts.to_bytes(8, "big") + data, digest_size=32).digest()
        yield (h, rec, 0, ts, ts + 13 * DAY_MS, data)


def build_v2(path: Path, all_rows: list) -> None:
    MessageStore.open(path, quota_bytes=1 << 40, clock_ms=lambda: NOW, reserve_bytes=0).close()
    with closing(store_schema.connect(path)) as c:
        store_schema.configure(c, wal_bytes=64 << 20)
        c.execute("BEGIN")
        c.executemany("INSERT INTO messages (hash, recipient, ns, ts, expiry, data) "
                      "VALUES (?,?,?,?,?,?)", all_rows)
        c.execute("UPDATE totals SET count=?, bytes=?",
                  (len(all_rows), sum(len(r[5]) for r in all_rows)))
        c.execute("COMMIT")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")


V1_LAYOUT = [
    "CREATE TABLE messages (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, recipient BLOB NOT "
    "NULL, ns INTEGER NOT NULL, ts INTEGER NOT NULL, expiry INTEGER NOT NULL, data BLOB NOT NULL)",
    "CREATE UNIQUE INDEX messages_mailbox ON messages (recipient, ns, hash)",
    "CREATE INDEX messages_expiry ON messages (expiry / 60000)",
]


def build_v1(path: Path, all_rows: list) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as c:
        c.execute("PRAGMA page_size=1024")
        c.execute("PRAGMA journal_mode=WAL")
        for stmt in V1_LAYOUT:
            c.execute(stmt)
        c.execute("BEGIN")
        c.executemany("INSERT INTO messages (hash, recipient, ns, ts, expiry, data) "
                      "VALUES (?,?,?,?,?,?)", all_rows)
        c.execute("COMMIT")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def v1_retrieve(conn, recipient, ns, after, max_count, max_bytes, now):
    """The v1 page: find `after`, then the mailbox's row ids above it, sorted (top-N)."""
    after_seq = 0
    if after is not None:
        row = conn.execute("SELECT seq FROM messages WHERE recipient=? AND ns=? AND hash=?",
                           (recipient, ns, after)).fetchone()
        after_seq = row[0] if row else 0
    seqs = conn.execute("SELECT seq FROM messages WHERE recipient=? AND ns=? AND seq>? "
                        "ORDER BY seq LIMIT ?", (recipient, ns, after_seq, max_count + 1)).fetchall()
    out, total = [], 0
    for (seq,) in seqs[:max_count]:
        h, ts, expiry, data = conn.execute(
            "SELECT hash, ts, expiry, data FROM messages WHERE seq=? AND expiry>?",
            (seq, now)).fetchone()
        if out and total + len(data) > max_bytes:
            break
        out.append(h)
        total += len(data)
    return out, len(seqs) > max_count


def time_pages(conn, fn, recipient, afters) -> list[float]:
    costs = []
    for after in afters:
        t0 = time.thread_time()
        got, _ = fn(conn, recipient, 0, after, 100, 900_000, NOW)
        costs.append((time.thread_time() - t0) * 1000)
        assert len(got) == 100, len(got)
    return costs


def afters_for(conn, recipient, n, seed) -> list[bytes]:
    hashes = [r[0] for r in conn.execute(
        "SELECT hash FROM messages WHERE recipient=? ORDER BY seq", (recipient,))]
    rng = random.Random(seed)
    return [hashes[rng.randrange(len(hashes) - 101)] for _ in range(n)]


def measure(path: Path, fn, pages: int, reader) -> dict:
    with closing(reader(path)) as conn:
        afters_s = afters_for(conn, SMALL, pages, 1)
        afters_l = afters_for(conn, LARGE, pages, 2)
        time_pages(conn, fn, SMALL, afters_s[:20])  # warm the page cache
        time_pages(conn, fn, LARGE, afters_l[:20])
        small = time_pages(conn, fn, SMALL, afters_s)
        large = time_pages(conn, fn, LARGE, afters_l)
    s, lg = statistics.median(small), statistics.median(large)
    return {"small_ms": round(s, 3), "large_ms": round(lg, 3), "ratio": round(lg / s, 2)}


def v2_reader(path):
    conn = store_schema.connect(path)
    store_schema.configure(conn, wal_bytes=64 << 20, query_only=True)
    return conn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--v1", action="store_true", help="also page the v1 layout the same way")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="store-retrieve-", dir=args.dir))
    try:
        all_rows = list(rows(args.small, args.large, args.size, seed=7))
        build_v2(work / "v2.sqlite3", all_rows)
        if args.v1:
            build_v1(work / "v1.sqlite3", all_rows)
        del all_rows
        v2 = [measure(work / "v2.sqlite3", ops.retrieve, args.pages, v2_reader)
              for _ in range(args.runs)]
        v1 = [measure(work / "v1.sqlite3", v1_retrieve, args.pages, sqlite3.connect)
              for _ in range(args.runs)] if args.v1 else []
    finally:
        shutil.rmtree(work)

    def med(runs, k):
        return round(statistics.median(r[k] for r in runs), 3) if runs else None

    out = {"bench": "store_retrieve", "small": args.small, "large": args.large,
           "message_bytes": args.size, "page": 100, "pages": args.pages, "runs": args.runs,
           "v2_small_ms": med(v2, "small_ms"), "v2_large_ms": med(v2, "large_ms"),
           "v2_ratio": med(v2, "ratio"), "v1_small_ms": med(v1, "small_ms"),
           "v1_large_ms": med(v1, "large_ms"), "v1_ratio": med(v1, "ratio"),
           "target_ratio": 2.0, "load": os.getloadavg()}
    print(json.dumps(out))
    line = (f"store_retrieve: a 100-message page costs {out['v2_large_ms']} ms CPU in a "
            f"{args.large}-message mailbox vs {out['v2_small_ms']} ms in a {args.small}-message "
            f"one = {out['v2_ratio']}x (target <= 2x)")
    if v1:
        line += (f"; v1 layout: {out['v1_large_ms']} vs {out['v1_small_ms']} ms = "
                 f"{out['v1_ratio']}x")
    print(line + f"; median of {args.runs}, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
