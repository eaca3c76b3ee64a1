"""MessageStore put throughput vs raw batched SQLite inserts of the same rows (the floor).

Both write 1 KiB messages into a fresh file with the store's own schema and pragmas
(WAL, synchronous=FULL, at most 64 rows per commit; the store commits adaptively). The store is driven by many concurrent putter tasks,
each awaiting its durable ack; the floor is a plain loop of executemany + COMMIT in one thread.
Prints a JSON object and a one-line summary; medians over --runs runs.

    .venv/bin/python bench/store_throughput.py [--messages 20000] [--putters 256] [--runs 5]
"""

import argparse
import hashlib
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import trio

from firmware.store import Message, MessageStore
from firmware.store import schema as store_schema

DAY_MS = 86_400_000


def make_messages(n: int, seed: int, *, size: int = 1024, recipients: int = 1000) -> list[Message]:
    rng = random.Random(seed)
    keys = [hashlib.blake2b(b"r%d" % i, digest_size=32).digest() for i in range(recipients)]
    now = 1_700_000_000_000
    out = []
    for i in range(n):
        rec, ns, ts = rng.choice(keys), 0, now + i + rng.randrange(-60_000, 60_000)
        data = rng.randbytes(size)
        h = hashlib.blake2b(rec + ns.to_bytes(2, "big", signed=True) + ts.to_bytes(8, "big")
                            + data, digest_size=32).digest()
        out.append(Message(h, rec, ns, ts, ts + 14 * DAY_MS, data))
    return out


async def store_run(path: Path, msgs: list[Message], putters: int, batch_rows: int) -> dict:
    store = MessageStore.open(path, quota_bytes=1 << 40, batch_rows=batch_rows,
                              clock_ms=lambda: 1_700_000_000_000)  # adaptive group commit
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            it = iter(msgs)

            async def putter():
                for m in it:
                    await store.put(m)

            t0 = time.perf_counter()
            async with trio.open_nursery() as inner:
                for _ in range(putters):
                    inner.start_soon(putter)
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
        st = store.stats()
        assert st["count"] == len(msgs), st
        return {"seconds": elapsed, "commits": st["commits"]}
    finally:
        store.close()


def raw_run(path: Path, msgs: list[Message], batch_rows: int) -> dict:
    MessageStore.open(path, quota_bytes=0, clock_ms=lambda: 0).close()  # same schema + page size
    conn = store_schema.connect(path)
    store_schema.configure(conn, wal_bytes=64 << 20)  # the store's default
    rows = [(m.hash, m.recipient, m.ns, m.ts, m.expiry, m.data) for m in msgs]
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch_rows):
        chunk = rows[i:i + batch_rows]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO messages (hash, recipient, ns, ts, expiry, data) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (hash) DO NOTHING", chunk)
        conn.execute("UPDATE totals SET count=count+?, bytes=bytes+? WHERE id=0",
                     (len(chunk), sum(len(r[5]) for r in chunk)))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return {"seconds": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--putters", type=int, default=256)
    ap.add_argument("--batch-rows", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to put the files (default: a temp dir)")
    args = ap.parse_args()
    store_rates, raw_rates, ratios, commits = [], [], [], []
    for run in range(args.runs):
        msgs = make_messages(args.messages, seed=run)
        work = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.dir))
        try:
            # alternate the order so drift in machine load hits both sides alike
            if run % 2:
                raw = raw_run(work / "raw.sqlite3", msgs, args.batch_rows)
                ours = trio.run(store_run, work / "store.sqlite3", msgs, args.putters,
                                args.batch_rows)
            else:
                ours = trio.run(store_run, work / "store.sqlite3", msgs, args.putters,
                                args.batch_rows)
                raw = raw_run(work / "raw.sqlite3", msgs, args.batch_rows)
        finally:
            shutil.rmtree(work)
        store_rates.append(args.messages / ours["seconds"])
        raw_rates.append(args.messages / raw["seconds"])
        ratios.append(store_rates[-1] / raw_rates[-1])
        commits.append(ours["commits"])
    result = {
        "bench": "store_throughput",
        "messages": args.messages,
        "message_bytes": 1024,
        "putters": args.putters,
        "batch_rows": args.batch_rows,
        "runs": args.runs,
        "store_msgs_per_s_median": round(statistics.median(store_rates)),
        "raw_batched_msgs_per_s_median": round(statistics.median(raw_rates)),
        "ratio_median": round(statistics.median(ratios), 3),
        "store_msgs_per_s": [round(r) for r in store_rates],
        "raw_batched_msgs_per_s": [round(r) for r in raw_rates],
        "store_commits": commits,
        "target_ratio": 0.5,
    }
    print(json.dumps(result))
    print(f"store_throughput: MessageStore {result['store_msgs_per_s_median']} msg/s vs raw "
          f"batched SQLite {result['raw_batched_msgs_per_s_median']} msg/s = "
          f"{result['ratio_median']:.0%} of the floor (target >= 50%), 1 KiB messages, "
          f"{args.putters} putters, median of {args.runs}")


if __name__ == "__main__":
    main()
