"""Bytes written to disk per stored payload byte: MessageStore vs one fsync'd commit per message.

Why: SD cards wear out by bytes written. The figure is write_bytes of /proc/self/io (every thread
of this process, so the committer's worker threads and their checkpoints count), taken before the
puts and after the store is closed, which checkpoints the WAL into the main file, divided by the
data bytes stored. It is page-cache accounting: what the kernel will send to the device, not
counting ext4's own journal.

Each run starts from a copy of one prefilled store (--prefill messages, so index pages are
spread like in a store that has been running), then puts --messages 1 KiB messages from many
concurrent tasks. The comparison is the same store with batch_rows=1: one fsync'd commit per
message. Prints a JSON object and a one-line summary; medians over --runs runs.

    .venv/bin/python bench/write_amplification.py [--prefill 50000] [--messages 20000] [--runs 5]

With --schemas it instead compares table/index layouts and page sizes with raw SQLite inserts
(64 rows per commit, synchronous=FULL, 64 MiB WAL), which is how the store's schema was chosen
("store": the current schema; "store_v1": the one before the insertion-order mailbox index).
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
from contextlib import closing
from pathlib import Path

import trio
from store_throughput import make_messages

from firmware.store import MessageStore
from firmware.store import schema as store_schema

_TABLE = ("CREATE TABLE messages (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL{u}, "
          "recipient BLOB NOT NULL, ns INTEGER NOT NULL, ts INTEGER NOT NULL, "
          "expiry INTEGER NOT NULL, data BLOB NOT NULL)")
_STORE = [st for m in store_schema.MIGRATIONS for st in store_schema.split_statements(m)]
_V2 = [_TABLE.format(u=""), "CREATE UNIQUE INDEX h ON messages (hash)",
       "CREATE INDEX mb ON messages (recipient, ns)", "CREATE INDEX ex ON messages (expiry / 60000)"]
# name -> (page size, statements); "store" is the store's own schema (every migration applied)
LAYOUTS = {
    "store": (1024, _STORE),
    "store_v1": (1024, store_schema.split_statements(store_schema.MIGRATIONS[0])),
    "store_4k_pages": (4096, _STORE),
    "store_512_pages": (512, _V2),
    "hash_unique+mailbox+expiry": (1024, [
        _TABLE.format(u=" UNIQUE"), "CREATE INDEX mb ON messages (recipient, ns)",
        "CREATE INDEX ex ON messages (expiry)"]),
    "one_index+plain_expiry": (1024, [
        _TABLE.format(u=""), "CREATE UNIQUE INDEX mb ON messages (recipient, ns, hash)",
        "CREATE INDEX ex ON messages (expiry)"]),
    "without_rowid_by_hash": (1024, [
        "CREATE TABLE messages (hash BLOB PRIMARY KEY, seq INTEGER NOT NULL, recipient BLOB NOT "
        "NULL, ns INTEGER NOT NULL, ts INTEGER NOT NULL, expiry INTEGER NOT NULL, data BLOB NOT "
        "NULL) WITHOUT ROWID", "CREATE INDEX mb ON messages (recipient, ns, seq)",
        "CREATE INDEX ex ON messages (expiry)"]),
}


def write_bytes() -> int:
    with open("/proc/self/io", "rb") as f:
        for line in f:
            if line.startswith(b"write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


WAL_BYTES = 64 << 20  # the store's default; --wal-mib changes it


def open_store(path: Path, batch_rows: int) -> MessageStore:
    return MessageStore.open(path, quota_bytes=1 << 40, batch_rows=batch_rows,
                             wal_bytes=WAL_BYTES,
                             clock_ms=lambda: 1_700_000_000_000)


async def put_all(store: MessageStore, msgs, putters: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        it = iter(msgs)

        async def putter():
            for m in it:
                await store.put(m)

        async with trio.open_nursery() as inner:
            for _ in range(putters):
                inner.start_soon(putter)
        nursery.cancel_scope.cancel()


def copy_db(src: Path, dst: Path) -> None:
    """Copy page by page with SQLite's backup API, as SQLite itself would have written it.

    Not shutil.copyfile: on recent kernels a bulk copy leaves the file in large page-cache
    folios, and write_bytes then charges a whole folio for every 1 KiB page SQLite dirties
    (it measured 11 instead of 6.5 bytes per byte here).
    """
    with closing(sqlite3.connect(src)) as a, closing(sqlite3.connect(dst)) as b:
        a.backup(b)


def measure(template: Path, work: Path, msgs, putters: int, batch_rows: int) -> dict:
    path = work / f"b{batch_rows}.sqlite3"
    copy_db(template, path)
    store = open_store(path, batch_rows)
    # Clean page cache first: a page still dirty from the copy would absorb our writes unseen.
    os.sync()
    w0 = write_bytes()
    try:
        trio.run(put_all, store, msgs, putters)
        stats = store.stats()
    finally:
        store.close()  # last connection: checkpoints the WAL into the file and removes it
    written = write_bytes() - w0
    payload = sum(len(m.data) for m in msgs)
    return {"ratio": written / payload, "written": written, "payload": payload,
            "commits": stats["commits"], "store_counted": stats["bytes_written"],
            "file_bytes": path.stat().st_size}


def measure_layout(path: Path, layout: str, prefill, msgs) -> float:
    page_size, statements = LAYOUTS[layout]
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA page_size={page_size}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA wal_autocheckpoint={(64 << 20) // page_size}")
        for stmt in statements:
            conn.execute(stmt)
        seq = iter(range(1, 1 << 62))

        def insert(batch):
            for i in range(0, len(batch), 64):
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO messages (seq, hash, recipient, ns, ts, expiry, data) "
                    "VALUES (?,?,?,?,?,?,?)",
                    [(next(seq), m.hash, m.recipient, m.ns, m.ts, m.expiry, m.data)
                     for m in batch[i:i + 64]])
                conn.execute("COMMIT")

        insert(prefill)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.sync()
        w0 = write_bytes()
        insert(msgs)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return (write_bytes() - w0) / sum(len(m.data) for m in msgs)


def compare_layouts(args, work: Path) -> None:
    prefill = make_messages(args.prefill, seed=10_000)
    ratios: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for run in range(args.runs):
        msgs = make_messages(args.messages, seed=run)
        for name in LAYOUTS:
            path = work / f"{name}-{run}.sqlite3"
            ratios[name].append(measure_layout(path, name, prefill, msgs))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    result = {"bench": "write_amplification_layouts", "prefill_messages": args.prefill,
              "messages": args.messages, "runs": args.runs,
              "bytes_per_payload_byte_median": {
                  k: round(statistics.median(v), 2) for k, v in ratios.items()}}
    print(json.dumps(result))
    print("write_amplification layouts (raw SQLite, 64-row commits, 64 MiB WAL): " + ", ".join(
        f"{k} {v:.2f}" for k, v in result["bytes_per_payload_byte_median"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefill", type=int, default=50_000)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--putters", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to put the files (default: a temp dir)")
    ap.add_argument("--schemas", action="store_true", help="compare layouts with raw SQLite")
    ap.add_argument("--wal-mib", type=int, default=64, help="the store's WAL size (wal_bytes)")
    args = ap.parse_args()
    global WAL_BYTES
    WAL_BYTES = args.wal_mib << 20
    work = Path(tempfile.mkdtemp(prefix="store-wa-", dir=args.dir))
    if args.schemas:
        try:
            return compare_layouts(args, work)
        finally:
            shutil.rmtree(work)
    try:
        template = work / "template.sqlite3"
        store = open_store(template, 64)
        try:
            trio.run(put_all, store, make_messages(args.prefill, seed=10_000), args.putters)
        finally:
            store.close()
        grouped, single = [], []
        for run in range(args.runs):
            msgs = make_messages(args.messages, seed=run)
            grouped.append(measure(template, work, msgs, args.putters, 64))
            single.append(measure(template, work, msgs, args.putters, 1))
    finally:
        shutil.rmtree(work)
    med = lambda runs: statistics.median(r["ratio"] for r in runs)  # noqa: E731
    result = {
        "bench": "write_amplification",
        "prefill_messages": args.prefill,
        "messages": args.messages,
        "message_bytes": 1024,
        "wal_mib": args.wal_mib,
        "runs": args.runs,
        "store_bytes_per_payload_byte_median": round(med(grouped), 2),
        "per_message_commit_bytes_per_payload_byte_median": round(med(single), 2),
        "store_runs": [round(r["ratio"], 2) for r in grouped],
        "per_message_commit_runs": [round(r["ratio"], 2) for r in single],
        "store_commits": [r["commits"] for r in grouped],
        "store_self_counted_ratio": [round(r["store_counted"] / r["payload"], 2) for r in grouped],
        "db_file_bytes_after": grouped[-1]["file_bytes"],
        "target": 9,
    }
    print(json.dumps(result))
    g, s = result["store_bytes_per_payload_byte_median"], result[
        "per_message_commit_bytes_per_payload_byte_median"]
    print(f"write_amplification: MessageStore writes {g:.2f} bytes per payload byte vs {s:.2f} "
          f"with one fsync'd commit per message ({s / g:.1f}x less; target <= 9), "
          f"1 KiB messages into a store of {args.prefill} + {args.messages}, median of {args.runs}")


if __name__ == "__main__":
    main()
