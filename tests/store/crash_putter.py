"""Child process for test_store_crash: puts messages forever, printing each acknowledged one.

Usage: python crash_putter.py DB_PATH FIRST_INDEX [PUTTERS [COUNT]]. Prints "INDEX HASHHEX"
after each put() returned; the parent SIGKILLs it at a random moment and checks every printed
message (or, given COUNT, it stops after that many acks).
"""

import sys
import time

import trio

from firmware.store import MessageStore
from tests.store.conftest import make_msg


async def main(path: str, first: int, putters: int, count: int | None) -> None:
    store = MessageStore.open(path, quota_bytes=10**10,  # adaptive group commit (the default)
                              clock_ms=lambda: int(time.time() * 1000))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        counter = iter(range(first, first + count if count else 10**12))

        async def putter():
            for i in counter:
                m = make_msg(i, size=200 + i % 3000, recipient=bytes([i % 5]) * 32, ns=i % 3)
                await store.put(m)
                sys.stdout.write(f"{i} {m.hash.hex()}\n")
                sys.stdout.flush()

        async with trio.open_nursery() as workers:
            for _ in range(putters):
                workers.start_soon(putter)
        nursery.cancel_scope.cancel()
    store.close()


if __name__ == "__main__":
    args = sys.argv[1:] + [None] * 2
    trio.run(main, args[0], int(args[1]), int(args[2] or 16), int(args[3] or 0))
