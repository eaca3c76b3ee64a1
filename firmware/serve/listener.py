"""The node's listener: accept, give out a slot (or not), TLS, then frames through the pipeline.

A thin driver of two pure objects: `ConnTable` decides who may hold a slot (per-address shares,
whom to shed), `ConnPolicy` each connection's timers (handshake, trickled frames, stalled
readers, silence). What this module adds is only I/O: one task per connection reading frames,
one task per request (inline ops such as `info` are answered in the read loop), one watchdog
sleeping until the policy's next deadline, the shared frame writer (`Outbox`), and a memory
budget for frames that arrive in parts.

Accepting (firmware/serve/accepting.py) takes every connection the kernel has queued, asks the
table, and resets a refused one on the spot, without a task or a TLS object; at most
`max_total + accept_batch` connections are held in memory at once (shed ones still closing
included): past that the accept loop waits for them. A connection gets its TLS object only once
its first bytes are in (silence costs a socket and a task); its objects make no reference cycle,
so its memory goes as it closes (firmware/serve/reclaim.py is the backstop for what a broken
link leaves).

Behaviour a peer sees: over its share or with the table full of more valuable connections, the
socket is reset before TLS; at `max_inflight` requests in flight the node stops reading the
connection (TCP backpressure) until an answer went out; a broken byte stream (bad length, bad
CBOR) gets one error frame with id null, then a close; a policy verdict closes the connection.
"""

import functools
import socket

import trio

from firmware.link.tlsstream import TlsStream
from firmware.link.writer import Outbox
from firmware.proto.errors import ProtocolError
from firmware.proto.frames import CLOSED, NEED_DATA, FrameDecoder, encode_frame

from .accepting import accept_ready, bind_tcp, refuse
from .conn_policy import ConnLimits, ConnPolicy
from .conn_table import ACTIVE, FRESH, IDLE_CLIENT, ConnTable, TableLimits
from .pipeline import ConnInfo, error_map
from .reclaim import Reclaimer

__all__ = ["Listener", "FrameBudget", "bind_tcp"]

RECEIVE_CHUNK = 65536
HELD_ANSWERS_MAX = 256 * 1024  # inline answers held back for one write, at most
BUDGETED_FRAME = 16 * 1024  # frames bigger than this reserve their size before being read
ACCEPT_BATCH = 64  # connections taken off the kernel's queue per wake-up, at most


class FrameBudget:
    """Bytes of partly received frames held at once: `total` in all, `per_ip` per address.
    Why: each connection may buffer a frame of up to 1 MiB; 256 slow ones would be 256 MiB."""

    def __init__(self, total: int, per_ip: int):
        self.total, self.per_ip = total, per_ip
        self.used = 0
        self._by_ip: dict[str, int] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self.waits = 0

    def _fits(self, ip, n):
        return self.used + n <= self.total and self._by_ip.get(ip, 0) + n <= self.per_ip

    async def take(self, ip: str, n: int) -> int:
        n = min(n, self.per_ip)
        while not self._fits(ip, n):
            self.waits += 1
            await self._lot.park()
        self.used += n
        self._by_ip[ip] = self._by_ip.get(ip, 0) + n
        return n

    def give(self, ip: str, n: int) -> None:
        if not n:
            return
        self.used -= n
        left = self._by_ip.get(ip, 0) - n
        if left > 0:
            self._by_ip[ip] = left
        else:
            self._by_ip.pop(ip, None)
        self._lot.unpark_all()


class _Conn:
    __slots__ = ("key", "info", "scope", "watch_scope", "policy", "verdict", "raw", "reads_held")

    def __init__(self, key, info, raw=None, reads_held=None):
        self.key = key
        self.info = info
        self.raw = raw  # the stream below TLS (the shaper's, when there is one)
        self.reads_held = reads_held
        self.scope = trio.CancelScope()
        self.watch_scope = trio.CancelScope()
        self.policy: ConnPolicy | None = None
        self.verdict: str | None = None

    def held(self) -> float:
        """Seconds the node itself held this connection's reads (bandwidth pacing)."""
        return self.reads_held(self.raw) if self.reads_held is not None else 0.0


class Listener:
    """Service: ``await nursery.start(listener.run, bound_socket)`` -> the bound address. On
    shutdown call `drain()` (stop accepting and reading; answers in flight still go out) and
    wait on `drained`. `serve_stream` serves a stream secured elsewhere (a bridge's tunnel)."""

    def __init__(self, pipeline, ssl_context, *, clock_ms, log, limits: ConnLimits | None = None,
                 table: TableLimits | None = None, wrap_stream=None, reads_held=None,
                 frame_budget: FrameBudget | None = None, reclaimer: Reclaimer | None = None,
                 accept_batch: int = ACCEPT_BATCH):
        """`wrap_stream(tcp) -> stream` goes below TLS (the bandwidth shaper); `reads_held(
        stream) -> seconds` says how long it held that stream's reads (left out of deadlines;
        None when nothing holds reads)."""
        self.pipeline = pipeline
        self.ssl_context = ssl_context
        self.clock_ms = clock_ms
        self.log = log
        self.limits = limits or ConnLimits()
        self.table = ConnTable(table or TableLimits())
        self.wrap_stream = wrap_stream  # below TLS, e.g. the bandwidth shaper
        self.reads_held = reads_held
        self.budget = frame_budget or FrameBudget(16 << 20, 4 << 20)
        self.drained = trio.Event()
        self._draining = False
        self._accept_scope = trio.CancelScope()
        self.reclaimer = reclaimer or Reclaimer()
        self._conns: dict[object, _Conn] = {}
        self._accept_batch = accept_batch
        # connections held in memory at most, shed ones still closing included
        self._held_max = self.table.limits.max_total + accept_batch
        self._fewer = trio.lowlevel.ParkingLot()  # (the accept loop waits here at _held_max)
        self.counters = {"accepted": 0, "refused": 0, "handshake_failed": 0, "bad_frames": 0,
                         "closed_slow_frame": 0, "closed_stalled": 0, "closed_idle": 0,
                         "closed_handshake": 0, "shed": 0, "accept_errors": 0,
                         "accept_paused": 0}

    @property
    def active(self) -> int:
        return len(self._conns)

    def info(self) -> dict:
        return {**self.table.info(), **self.counters, **self.reclaimer.counters,
                "connections": len(self._conns),
                "frame_buffer_bytes": self.budget.used}

    async def run(self, sock: socket.socket, *, task_status=trio.TASK_STATUS_IGNORED):
        addr = sock.getsockname()[:2]
        sock.setblocking(False)
        try:
            async with trio.open_nursery() as conns:
                with self._accept_scope:
                    task_status.started(addr)
                    await self._accept_loop(sock, conns)
                sock.close()  # new connections are refused by the kernel from now on
        finally:
            self.drained.set()

    async def _accept_loop(self, sock: socket.socket, conns) -> None:
        while True:
            while len(self._conns) >= self._held_max:  # shed ones must finish closing first
                self.counters["accept_paused"] += 1
                await self._fewer.park()
            await trio.lowlevel.wait_readable(sock)
            ready, short = accept_ready(sock, min(self._accept_batch,
                                                  self._held_max - len(self._conns)))
            for tcp, host, port in ready:
                self._admit(tcp, host, port, conns)
            if short is not None:
                self.counters["accept_errors"] += 1
                self.log.warning("accept_failed", error=f"{short.strerror}; waiting 0.1 s")
                await trio.sleep(0.1)

    def _admit(self, tcp: socket.socket, host: str, port: int, conns) -> None:
        """A slot for the connection, served in a task of its own; or a reset, right here."""
        key = object()
        verdict = self.table.admit(key, host, trio.current_time()) if not self._draining else None
        if verdict is None or not verdict.ok:
            self.counters["refused"] += 1
            refuse(tcp)
            return
        if verdict.victim is not None:
            self._shed(verdict.victim)
        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(tcp))
            raw = self.wrap_stream(stream) if self.wrap_stream is not None else stream
        except Exception as e:  # the peer left already, or a bug: one connection, not the node
            self.table.remove(key)
            tcp.close()
            if not isinstance(e, OSError):
                self.log.error("connection_failed", error=f"{type(e).__name__}: {e}")
            return
        self.counters["accepted"] += 1
        # registered now, not when its task starts: a newcomer later in this same batch may
        # shed it, and must find it to cancel it
        conn = self._conns[key] = _Conn(key, ConnInfo(host, port), raw, self.reads_held)
        conns.start_soon(self._accepted, conn, stream)

    def drain(self) -> None:
        """Stop accepting; stop reading requests; connections close once their answers are out."""
        self._draining = True
        self._accept_scope.cancel()
        for conn in list(self._conns.values()):
            conn.verdict = "draining"
            conn.watch_scope.cancel()
        if not self._conns:
            self.drained.set()

    # -- one connection --------------------------------------------------------------------

    async def _accepted(self, conn: _Conn, tcp: trio.SocketStream) -> None:
        key, raw = conn.key, conn.raw
        stream = None

        async def handshake():
            nonlocal stream
            await trio.lowlevel.wait_readable(tcp.socket)  # silence costs no TLS state
            stream = TlsStream(raw, self.ssl_context, server_side=True)
            await stream.do_handshake()

        try:
            with conn.scope:
                policy = conn.policy = ConnPolicy(self.limits, trio.current_time())
                if self.reads_held is None:  # nothing holds reads: a fixed deadline
                    with trio.move_on_at(policy.deadline(0, None)):
                        await handshake()
                else:  # ~50 us a handshake more, paid only where a shaper may hold reads
                    failed = None  # (raised after the nursery, not inside an exception group)
                    with trio.CancelScope() as scope:
                        async with trio.open_nursery() as clock:
                            clock.start_soon(self._handshake_clock, conn, scope)
                            try:
                                await handshake()
                            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                                failed = e
                            clock.cancel_scope.cancel()
                    if failed is not None:
                        raise failed
                if stream is not None and _handshaken(stream):
                    policy.handshake_done(trio.current_time())
                    self.table.set_stage(key, FRESH)
                    await self._serve(stream, conn)
                else:
                    self.counters["closed_handshake"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if conn.policy is not None and not conn.policy.shaken:
                self.counters["handshake_failed"] += 1
        except Exception as e:  # a bug must cost one connection, never the node
            self.log.error("connection_failed", error=f"{type(e).__name__}: {e}")
        finally:
            self._forget(conn)
            await trio.aclose_forcefully(raw)  # (closes tcp; the shaper's count ends now)
            if stream is not None:
                self.reclaimer.ended()

    @staticmethod
    async def _handshake_clock(conn: _Conn, handshake: trio.CancelScope) -> None:
        """Ends the handshake at its deadline, which moves by the time the node itself held
        the connection's reads (pacing a cap; see ConnPolicy)."""
        policy = conn.policy
        while True:
            held = conn.held()
            if policy.check(trio.current_time(), 0, None, held) is not None:
                handshake.cancel()
                return
            await trio.sleep_until(policy.deadline(0, None, held))

    async def serve_stream(self, stream: trio.abc.Stream, info: ConnInfo, *, raw=None) -> None:
        """Serve frames on an already secured stream (a bridge's tunnel) until it ends; the
        connection still takes a slot of its address's share. `raw`: the stream below its TLS
        (the shaper's), whose held reads are left out of deadlines."""
        key = object()
        verdict = self.table.admit(key, info.client, trio.current_time())
        if not verdict.ok or self._draining:
            self.table.remove(key)
            self.counters["refused"] += 1
            await trio.aclose_forcefully(stream)
            return
        if verdict.victim is not None:
            self._shed(verdict.victim)
        conn = self._conns[key] = _Conn(key, info, raw, self.reads_held)
        conn.policy = ConnPolicy(self.limits, trio.current_time(), handshaken=True)
        self.table.set_stage(key, FRESH)
        try:
            with conn.scope:
                await self._serve(stream, conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as e:  # a bug must cost one connection, never the node
            self.log.error("connection_failed", error=f"{type(e).__name__}: {e}")
        finally:
            self._forget(conn)
            await trio.aclose_forcefully(stream)

    def _shed(self, key) -> None:
        victim = self._conns.get(key)
        if victim is not None:
            self.counters["shed"] += 1
            victim.verdict = "shed"
            victim.scope.cancel()

    def _forget(self, conn: _Conn) -> None:
        self.table.remove(conn.key)
        self._conns.pop(conn.key, None)
        self._fewer.unpark_all()
        if self._draining and not self._conns:
            self.drained.set()

    async def _serve(self, stream, conn: _Conn) -> None:
        lim = self.limits
        slots = trio.Semaphore(lim.max_inflight)
        # (the callback must not hold the outbox: a cycle would keep the stream alive)
        outbox = Outbox(stream, on_write=functools.partial(self._write_began, conn, slots))
        read_scope = trio.CancelScope()
        if self._draining:
            read_scope.cancel()
        async with trio.open_nursery() as watched:
            watched.start_soon(self._watch, conn, slots, outbox, read_scope)
            async with trio.open_nursery() as reqs:
                with read_scope:
                    await self._read_loop(stream, conn, slots, outbox, reqs)
            watched.cancel_scope.cancel()  # every answer is out: nothing left to watch
        with trio.move_on_after(1):
            await stream.aclose()

    def _nudge(self, conn, slots, outbox) -> None:
        """Something happened that may bring the policy's deadline forward: tell the watchdog."""
        self._deadline_moved(conn, slots, outbox.write_started)

    def _write_began(self, conn, slots) -> None:
        self._deadline_moved(conn, slots, trio.current_time())

    def _deadline_moved(self, conn, slots, write_started) -> None:
        inflight = self.limits.max_inflight - slots.value
        at = conn.policy.deadline(inflight, write_started, conn.held())
        if at < conn.watch_scope.deadline:
            conn.watch_scope.deadline = at

    async def _watch(self, conn: _Conn, slots, outbox, read_scope) -> None:
        policy = conn.policy
        while True:
            inflight = self.limits.max_inflight - slots.value
            now = trio.current_time()
            held = conn.held()
            verdict = conn.verdict or policy.check(now, inflight, outbox.write_started, held)
            if verdict is not None:
                break
            conn.watch_scope = trio.CancelScope(
                deadline=policy.deadline(inflight, outbox.write_started, held))
            with conn.watch_scope:
                await trio.sleep_forever()
        if verdict in ("idle", "draining"):
            read_scope.cancel()  # stop reading; answers in flight still go out
            self.table.set_stage(conn.key, IDLE_CLIENT)
            if verdict == "idle":
                self.counters["closed_idle"] += 1
            return
        self.counters["closed_" + verdict] += 1
        self.table.set_stalled(conn.key, True)
        self.log.info("connection_closed", client=conn.info.client,
                      reason=self.limits.describe(verdict))
        conn.scope.cancel()

    async def _read_loop(self, stream, conn: _Conn, slots, outbox, reqs) -> None:
        """Frames in until the peer closes or breaks the stream (a peer that vanished is no
        error of the node's: it ends here quietly instead of as an exception group)."""
        try:
            await self._read_frames(stream, conn, slots, outbox, reqs)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _read_frames(self, stream, conn: _Conn, slots, outbox, reqs) -> None:
        policy, info = conn.policy, conn.info
        decoder = FrameDecoder()
        held: list[bytes] = []  # inline answers, written at once before the next read
        held_bytes = 0
        reserved = 0  # frame budget held for the frame being received
        inline_ops = self.pipeline.inline_ops
        try:
            while True:
                try:
                    event = decoder.next_event()
                except ProtocolError as e:
                    self.counters["bad_frames"] += 1
                    self.log.info("bad_frame", client=info.client, code=e.code,
                                  error=e.msg[:200])
                    held.append(encode_frame(error_map(None, e.code, e.msg)))
                    await outbox.send(b"".join(held))
                    return
                if event is NEED_DATA or event is CLOSED:
                    if held:
                        await outbox.send(held[0] if len(held) == 1 else b"".join(held))
                        held.clear()
                        held_bytes = 0
                        policy.answered(trio.current_time())
                    if event is CLOSED:
                        return
                    pending = decoder.pending_size
                    if pending is not None and pending > BUDGETED_FRAME and not reserved:
                        reserved = await self.budget.take(info.client, pending)
                    try:
                        data = await stream.receive_some(RECEIVE_CHUNK)
                    except trio.BrokenResourceError:
                        data = b""  # TLS peers often close without close_notify
                    decoder.receive_data(data)
                    policy.received(trio.current_time(), decoder.pending_size, conn.held())
                    self._nudge(conn, slots, outbox)
                    continue
                if reserved and decoder.pending_size is None:
                    self.budget.give(info.client, reserved)
                    reserved = 0
                op = event.get("op")
                if type(op) is str and op in inline_ops:
                    response = await self.pipeline.respond(event, info, self.clock_ms())
                    data = _encode(response)
                    held.append(data)
                    held_bytes += len(data)
                    if held_bytes >= HELD_ANSWERS_MAX:
                        await outbox.send(b"".join(held))
                        held.clear()
                        held_bytes = 0
                    continue
                try:  # backpressure: no reads while at the limit
                    slots.acquire_nowait()
                except trio.WouldBlock:
                    if held:  # answers that hold no slot must not wait for one
                        await outbox.send(b"".join(held))
                        held.clear()
                        held_bytes = 0
                    await slots.acquire()
                self.table.set_stage(conn.key, ACTIVE)
                reqs.start_soon(self._answer, event, conn, slots, outbox, reqs)
        finally:
            self.budget.give(info.client, reserved)

    async def _answer(self, frame, conn: _Conn, slots, outbox, reqs) -> None:
        try:
            response = await self.pipeline.respond(frame, conn.info, self.clock_ms())
            if conn.info.peer_id is not None and "node_counted" not in conn.info.state:
                conn.info.state["node_counted"] = True  # it proved a node id: its own share
                self.table.proved_node(conn.key, conn.info.peer_id)
            # other answers in flight may finish in this same tick: let them share the write
            await outbox.send(_encode(response),
                              linger=slots.value < self.limits.max_inflight - 1)
            conn.policy.answered(trio.current_time())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reqs.cancel_scope.cancel()  # peer gone: abandon the rest of this link
        finally:
            slots.release()
            if slots.value == self.limits.max_inflight:
                self.table.set_stage(conn.key, IDLE_CLIENT)
                self._nudge(conn, slots, outbox)


def _handshaken(stream: TlsStream) -> bool:
    return stream.version() is not None


def _encode(response: dict) -> bytes:
    try:
        return encode_frame(response)
    except ProtocolError as e:  # a response over the frame limit: a node bug, said as such
        return encode_frame(error_map(response.get("id"), "internal", e.msg))
