"""The attacker of bench/flood.py, run as its own process (so its CPU is not the client's).

    python bench/flood_attacker.py '{"host": "127.0.0.1", "port": 7070,
        "sources": ["127.0.0.2"], "slots": {"trickle": 200, ...}, "rate": 1000}'

Each slot is one connection the attacker tries to hold, from `sources[i % len(sources)]`
(bound with IP_BIND_ADDRESS_NO_PORT, so thousands share one source address). When the node
closes it (or the slot's mode ends it), the slot opens a new one at once; all slots together
open at most `rate` connections per second. `limit`: stop after that many opened in all;
`nice`: the process's niceness (its CPU would be another machine's on a real network).
The modes, each a way to tie up a server slot cheaply:

  silent_tcp   TCP connect, then nothing (pre-TLS)
  half_open    half a TLS ClientHello, then nothing (the server is mid-handshake)
  reopen       half a ClientHello, then close at once: re-open loops that never finish TLS
  tls_silent   a full TLS handshake, then silence
  trickle      TLS, a frame header announcing 60,000 bytes, then one byte every 3 s

Runs until stdin closes (or `limit` is reached), then prints its counters as one JSON line.
"""

import json
import math
import os
import socket
import ssl
import sys
import time

import trio

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
MODES = ("silent_tcp", "half_open", "reopen", "tls_silent", "trickle")
TRICKLE_ANNOUNCED = 60_000
TRICKLE_EVERY_S = 3.0


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def half_client_hello(ctx: ssl.SSLContext) -> bytes:
    """The first half of a real TLS 1.3 ClientHello (the server must wait for the rest)."""
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    return hello[: len(hello) // 2]


class Pacer:
    """At most `rate` new connections per second across all slots (a leaky schedule)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    async def wait(self):
        now = trio.current_time()
        at = max(now, self.next)
        self.next = at + self.interval
        if at > now:
            await trio.sleep_until(at)


class Attacker:
    def __init__(self, spec: dict):
        self.host, self.port = spec["host"], spec["port"]
        self.sources = spec["sources"]
        self.slots = spec["slots"]
        self.limit = spec.get("limit") or math.inf
        self.pacer = Pacer(spec.get("rate", 1000.0))
        self.ctx = client_context()
        self.hello = half_client_hello(self.ctx)
        self.done = trio.Event()
        self.c = {"opened": 0, "connect_failed": 0, "tls_ok": 0, "tls_failed": 0,
                  "closed_by_node": 0, "bytes_trickled": 0, "open_now": 0, "open_max": 0}
        self.lifetimes = {m: [] for m in MODES}

    async def run(self):
        async with trio.open_nursery() as n:
            i = 0
            for mode, count in self.slots.items():
                for _ in range(count):
                    n.start_soon(self._slot, mode, self.sources[i % len(self.sources)])
                    i += 1
            n.start_soon(self._until_stdin_closes)
            await self.done.wait()
            n.cancel_scope.cancel()

    async def _until_stdin_closes(self):
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        self.done.set()

    async def _connect(self, source):
        sock = trio.socket.socket()
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            await sock.bind((source, 0))
            await sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        return trio.SocketStream(sock)

    async def _slot(self, mode, source):
        run_mode = getattr(self, "_" + mode)
        while True:
            if self.c["opened"] >= self.limit:
                self.done.set()
                return
            await self.pacer.wait()
            self.c["opened"] += 1
            try:
                tcp = await self._connect(source)
            except OSError:
                self.c["connect_failed"] += 1
                await trio.sleep(0.05)
                continue
            t0 = time.monotonic()
            self.c["open_now"] += 1
            self.c["open_max"] = max(self.c["open_max"], self.c["open_now"])
            try:
                await run_mode(tcp)
                self.c["closed_by_node"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
                self.c["closed_by_node"] += 1
            finally:
                self.c["open_now"] -= 1
                self.lifetimes[mode].append(time.monotonic() - t0)
                await trio.aclose_forcefully(tcp)

    async def _wait_closed(self, stream):
        while await stream.receive_some(4096):
            pass

    async def _silent_tcp(self, tcp):
        await self._wait_closed(tcp)

    async def _half_open(self, tcp):
        await tcp.send_all(self.hello)
        await self._wait_closed(tcp)

    async def _reopen(self, tcp):
        await tcp.send_all(self.hello)

    async def _tls(self, tcp):
        tls = trio.SSLStream(tcp, self.ctx)
        try:
            with trio.fail_after(30):
                await tls.do_handshake()
        except (trio.TooSlowError, trio.BrokenResourceError, ssl.SSLError):
            self.c["tls_failed"] += 1
            raise trio.BrokenResourceError from None
        self.c["tls_ok"] += 1
        return tls

    async def _tls_silent(self, tcp):
        await self._wait_closed(await self._tls(tcp))

    async def _trickle(self, tcp):
        tls = await self._tls(tcp)
        await tls.send_all(TRICKLE_ANNOUNCED.to_bytes(4, "big"))
        gone = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError)
        async with trio.open_nursery() as n:  # (each side ends the other: no error escapes)
            async def drip():
                try:
                    while True:
                        await trio.sleep(TRICKLE_EVERY_S)
                        await tls.send_all(b"\xa0")
                        self.c["bytes_trickled"] += 1
                except gone:
                    pass
                n.cancel_scope.cancel()

            async def watch():
                try:
                    await self._wait_closed(tls)
                except gone:
                    pass
                n.cancel_scope.cancel()

            n.start_soon(drip)
            n.start_soon(watch)

    def report(self) -> dict:
        life = {}
        for mode, xs in self.lifetimes.items():
            if xs:
                xs.sort()
                life[mode] = {"n": len(xs), "p50_s": round(xs[len(xs) // 2], 3),
                              "max_s": round(xs[-1], 3)}
        return {**self.c, "lifetimes": life}


def main():
    spec = json.loads(sys.argv[1])
    os.nice(spec.get("nice", 0))
    attacker = Attacker(spec)
    t0 = time.monotonic()
    try:
        trio.run(attacker.run)
    except KeyboardInterrupt:
        pass
    out = attacker.report()
    out["seconds"] = round(time.monotonic() - t0, 2)
    out["cpu_s"] = round(time.process_time(), 2)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
