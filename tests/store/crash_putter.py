"""Child process for test_store_crash: puts messages forever, printing each acknowledged one.

Usage: python crash_putter.py DB_PATH FIRST_INDEX. Prints "INDEX HASHHEX" after each put()
returned; the parent SIGKILLs it at a random moment and checks every printed message.
"""

import sys
import time

import trio

from firmware.store import MessageStore
from tests.store.conftest import make_msg


async def main(path: str, first: int) -> None:
    store = MessageStore.open(path, quota_bytes=10**10, batch_ms=5,
                              clock_ms=lambda: int(time.time() * 1000))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        counter = iter(range(first, 10**12))

        async def putter():
            for i in counter:
                m = make_msg(i, size=200 + i % 3000, recipient=bytes([i % 5]) * 32, ns=i % 3)
                await store.put(m)
                sys.stdout.write(f"{i} {m.hash.hex()}\n")
                sys.stdout.flush()

        for _ in range(16):
            nursery.start_soon(putter)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
