"""kill -9 in the middle of grouped commits: every acknowledged message is there, intact."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from firmware.store import MessageStore

from .conftest import make_msg

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(db_path, first: int, rng: random.Random) -> dict[int, str]:
    """Start the putter, let it ack a random number of messages, SIGKILL it, return its acks."""
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/store/crash_putter.py"), str(db_path), str(first)],
        stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acked: dict[int, str] = {}
    target = rng.randrange(50, 1500)
    deadline = time.monotonic() + 60
    try:
        while len(acked) < target:
            line = child.stdout.readline()
            assert line, f"putter exited early (rc={child.poll()})"
            i, h = line.split()
            acked[int(i)] = h.decode()
            assert time.monotonic() < deadline, "putter too slow"
    finally:
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()  # acks printed before it died count too
        child.wait()
    for line in rest.split(b"\n")[:-1]:  # complete lines only: a torn last line is no ack
        i, h = line.split()
        acked[int(i)] = h.decode()
    return acked


@pytest.mark.slow
async def test_acked_messages_survive_sigkill(db_path):
    rng = random.Random(1234)
    all_acked: dict[int, str] = {}
    for round_ in range(6):
        acked = run_and_kill(db_path, round_ * 10**6, rng)
        assert len(acked) >= 50
        all_acked.update(acked)
        store = MessageStore.open(db_path, quota_bytes=10**10, clock_ms=lambda: 0)
        try:
            for i, h in all_acked.items():
                want = make_msg(i, size=200 + i % 3000, recipient=bytes([i % 5]) * 32, ns=i % 3)
                assert want.hash.hex() == h
                got = await store.get_many(want.recipient, want.ns, [want.hash])
                assert got == [want], f"round {round_}: acked message {i} lost or damaged"
            st = store.stats()
            assert st["count"] >= len(all_acked)  # unacked commits may be there too
            with closing(sqlite3.connect(db_path)) as c:
                assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                assert c.execute("SELECT count(*), sum(length(data)) FROM messages").fetchone() \
                    == (st["count"], st["bytes"])  # the running totals match the rows
        finally:
            store.close()
