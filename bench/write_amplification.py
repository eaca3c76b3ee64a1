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


def write_bytes() -> int:
    with open("/proc/self/io", "rb") as f:
        for line in f:
            if line.startswith(b"write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def open_store(path: Path, batch_rows: int) -> MessageStore:
    return MessageStore.open(path, quota_bytes=1 << 40, batch_rows=batch_rows, batch_ms=50,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefill", type=int, default=50_000)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--putters", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to put the files (default: a temp dir)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="store-wa-", dir=args.dir))
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
        "runs": args.runs,
        "store_bytes_per_payload_byte_median": round(med(grouped), 2),
        "per_message_commit_bytes_per_payload_byte_median": round(med(single), 2),
        "store_runs": [round(r["ratio"], 2) for r in grouped],
        "per_message_commit_runs": [round(r["ratio"], 2) for r in single],
        "store_commits": [r["commits"] for r in grouped],
        "store_self_counted_ratio": [round(r["store_counted"] / r["payload"], 2) for r in grouped],
        "db_file_bytes_after": grouped[-1]["file_bytes"],
        "target": 13,
        "stretch": 9,
    }
    print(json.dumps(result))
    g, s = result["store_bytes_per_payload_byte_median"], result[
        "per_message_commit_bytes_per_payload_byte_median"]
    print(f"write_amplification: MessageStore writes {g:.2f} bytes per payload byte vs {s:.2f} "
          f"with one fsync'd commit per message ({s / g:.1f}x less; target <= 13, stretch <= 9), "
          f"1 KiB messages into a store of {args.prefill} + {args.messages}, median of {args.runs}")


if __name__ == "__main__":
    main()
