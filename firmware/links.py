"""TLS links: the node's listener (server side) and the pinned client connection.

Server: TLS 1.3 over `trio.SSLStream` with the node's deterministic self-signed Ed25519
certificate. Each connection is a read loop feeding `firmware.proto.FrameDecoder`; every request
runs in its own task so many are in flight at once and answers go back in completion order;
answers that finish while a write is in progress go out together in the next write (`Outbox`).
Limits, each with the behaviour the peer sees:
  - max_connections: a connection over the limit is closed before the TLS handshake;
  - max_inflight_per_conn: at the limit the node stops reading that connection (TCP
    backpressure) until an answer has been sent;
  - handshake_timeout / idle_timeout: the connection is closed.
A broken byte stream (bad length, bad CBOR) gets one error frame with id null, then a close.

Client: TLS 1.3 without a CA; instead the server's certificate key must equal the node id we
expect (pinning). TLS 1.3's CertificateVerify already proved the server holds that key's secret,
so comparing the public key is the whole check.
"""

import contextvars
import os
import ssl
import tempfile

import trio

from firmware.identity import IdentityError, public_key_of_cert
from firmware.proto.errors import ProtocolError
from firmware.proto.frames import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from firmware.rpc import ConnInfo, error_map

RECEIVE_CHUNK = 65536
HELD_ANSWERS_MAX = 256 * 1024  # inline answers held back for one write, at most


class PinMismatch(ConnectionError):
    """The server's key is not the node id the client asked for."""


# ------------------------------------------------------------------------------ TLS contexts


def server_ssl_context(identity) -> ssl.SSLContext:
    """TLS 1.3 server context with the identity's certificate.

    `ssl` only loads keys from files: write both PEMs to a 0600 temp file, load, delete.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    fd, path = tempfile.mkstemp(prefix="homenode-tls-")
    try:
        os.write(fd, identity.tls_key_pem() + identity.tls_cert_pem())
        os.close(fd)
        fd = -1
        ctx.load_cert_chain(path)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(path)
    return ctx


def client_ssl_context() -> ssl.SSLContext:
    """TLS 1.3, no CA, no host name: trust comes from pinning the node id after the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# How outbound TCP streams are wrapped below TLS (the bandwidth shaper, so the node's own
# connections to peers count against its link limits and monthly cap like inbound ones). A
# ContextVar rather than a module global: a node sets it in its own task tree (Node.run), so
# every connection its services open inherits it, while a bare client or a second in-process
# node is unaffected.
outbound_wrap: contextvars.ContextVar = contextvars.ContextVar("homenode_outbound_wrap",
                                                              default=None)


async def open_pinned_stream(host: str, port: int, node_id: bytes, *,
                             ssl_context: ssl.SSLContext | None = None) -> trio.SSLStream:
    """A handshaken TLS stream to a node whose key is `node_id`; PinMismatch otherwise."""
    tcp = await trio.open_tcp_stream(host, port)
    wrap = outbound_wrap.get()
    if wrap is not None:
        tcp = wrap(tcp)
    stream = trio.SSLStream(tcp, ssl_context or client_ssl_context())
    try:
        await stream.do_handshake()
        der = stream.getpeercert(binary_form=True)
        if der is None:
            raise PinMismatch(f"{host}:{port} presented no certificate")
        try:
            got = public_key_of_cert(der)
        except IdentityError as e:
            raise PinMismatch(f"{host}:{port}: {e}") from None
        if got != node_id:
            raise PinMismatch(
                f"{host}:{port} is node {got.hex()}, not the expected {node_id.hex()}; "
                "check --node-id (or the address): refusing to talk to it"
            )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


# ------------------------------------------------------------------------------ server


class _Batch:
    """Frames queued while a write was in progress; `done` is set once they were all written
    (or the link broke: then `error` says why)."""

    __slots__ = ("frames", "done", "error")

    def __init__(self):
        self.frames: list[bytes] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


class Outbox:
    """One link's writer: frames sent while a TLS write is in progress are queued and go out
    together in the next write (one TLS record and one syscall instead of one per answer).

    Why no writer task: the first sender writes itself (no task switch when uncontended, the
    usual case) and keeps writing until the queue is empty; later senders wait until their
    batch was written. Order on the wire = order of `send` calls. The queue is bounded by the
    callers: each waits (holding its in-flight slot) until its frame is written, so the
    listener's in-flight limit bounds it and a peer that stops reading still stops the node
    reading its requests. A failed or cancelled write breaks the link for every queued frame.
    """

    __slots__ = ("stream", "write_started", "_next", "_writing", "_error", "max_write")

    def __init__(self, stream, *, max_write: int = 256 * 1024):
        self.stream = stream
        self.max_write = max_write  # bytes joined into one send_all at most
        self.write_started: float | None = None  # when the write in progress began
        self._next: _Batch | None = None  # frames waiting for the next write
        self._writing = False
        self._error: BaseException | None = None

    async def send(self, data: bytes, *, linger: bool = False) -> None:
        """Write `data` (one encoded frame) after everything sent before it; return once it was
        written. BrokenResourceError if the link broke (before or while writing it).

        `linger`: more frames are probably coming right now (other answers in flight); if no
        write is in progress, wait one scheduler tick first so those finishing in the same
        tick share this write instead of following it in a second one."""
        if self._error is not None:
            raise trio.BrokenResourceError(f"link broke earlier: {self._error!r}")
        if self._writing:
            batch = self._next
            if batch is None:
                batch = self._next = _Batch()
            batch.frames.append(data)
            await batch.done.wait()
            if batch.error is not None:
                raise trio.BrokenResourceError(f"link broke while sending: {batch.error!r}")
            return
        self._writing = True
        batch = None
        own = [data]
        try:
            if linger:
                await trio.lowlevel.cancel_shielded_checkpoint()
                if self._next is not None:  # frames queued during the tick share our write
                    batch, self._next = self._next, None
                    own.extend(batch.frames)
            if len(own) == 1:  # the usual case: no join, no extra coroutine
                self.write_started = trio.current_time()
                await self.stream.send_all(data)
            else:
                await self._write(own)
            own = None
            if batch is not None:
                batch.done.set()
                batch = None
            while self._next is not None:  # then the frames queued meanwhile, in order
                batch, self._next = self._next, None
                await self._write(batch.frames)
                batch.done.set()
                batch = None
        except BaseException as e:
            self._error = e
            for waiting in (batch, self._next):
                if waiting is not None:
                    waiting.error = e
                    waiting.done.set()
            self._next = None
            # ours went out before the link broke: the queued senders report the break
            broken = isinstance(e, trio.BrokenResourceError | trio.ClosedResourceError)
            if own is not None or not broken:
                raise
        finally:
            self._writing = False
            self.write_started = None

    async def _write(self, frames: list[bytes]) -> None:
        i, n = 0, len(frames)
        while i < n:
            if n == 1:
                data, i = frames[0], 1
            else:
                j, size = i, 0
                while j < n and (j == i or size + len(frames[j]) <= self.max_write):
                    size += len(frames[j])
                    j += 1
                data, i = b"".join(frames[i:j]), j
            self.write_started = trio.current_time()
            await self.stream.send_all(data)



class ClientListener:
    """Accepts client connections and serves frames through `handler.respond`.

    Service protocol: `addr = await nursery.start(listener.run, host, port)`; on shutdown call
    `drain()` (stop accepting and reading, let in-flight requests finish) and wait on `drained`.
    """

    def __init__(self, handler, ssl_context, *, clock_ms, log, max_connections=256,
                 max_inflight_per_conn=32, handshake_timeout=10.0, idle_timeout=300.0):
        self.handler = handler
        self.ssl_context = ssl_context
        self.clock_ms = clock_ms
        self.log = log
        self.max_connections = max_connections
        self.max_inflight = max_inflight_per_conn
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.active = 0
        self.counters = {"accepted": 0, "refused_over_limit": 0, "handshake_failed": 0,
                         "bad_frames": 0, "stalled_peers": 0}
        self.drained = trio.Event()
        self._draining = False
        self._accept_scope = trio.CancelScope()
        self._read_scopes: set[trio.CancelScope] = set()
        self.wrap_stream = None  # e.g. the bandwidth shaper: TCP stream -> shaped stream

    async def run(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED):
        listeners = await trio.open_tcp_listeners(port, host=host)
        addr = listeners[0].socket.getsockname()[:2]
        try:
            async with trio.open_nursery() as conns:
                with self._accept_scope:
                    task_status.started(addr)
                    await trio.serve_listeners(self._serve_one, listeners, handler_nursery=conns)
                for lst in listeners:
                    await lst.aclose()
        finally:
            self.drained.set()

    def drain(self) -> None:
        """Stop accepting; stop reading requests; connections close once their answers are sent."""
        self._draining = True
        self._accept_scope.cancel()
        for scope in list(self._read_scopes):
            scope.cancel()
        if self.active == 0:
            self.drained.set()

    def info(self) -> dict:
        return {"connections": self.active, **self.counters}

    async def _serve_one(self, tcp: trio.SocketStream) -> None:
        if self.active >= self.max_connections or self._draining:
            self.counters["refused_over_limit"] += 1
            await trio.aclose_forcefully(tcp)
            return
        self.active += 1
        self.counters["accepted"] += 1
        try:
            try:
                host, port = tcp.socket.getpeername()[:2]
            except OSError:
                return
            conn = ConnInfo(host, port)
            raw = self.wrap_stream(tcp) if self.wrap_stream is not None else tcp
            stream = trio.SSLStream(raw, self.ssl_context, server_side=True)
            try:
                with trio.fail_after(self.handshake_timeout):
                    await stream.do_handshake()
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                self.counters["handshake_failed"] += 1
                self.log.debug("handshake_failed", client=host)
                return
            try:
                await self._serve_conn(stream, conn)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        except Exception as e:  # a bug must cost one connection, never the node
            self.log.error("connection_failed", error=f"{type(e).__name__}: {e}")
        finally:
            self.active -= 1
            await trio.aclose_forcefully(tcp)
            if self._draining and self.active == 0:
                self.drained.set()

    async def _serve_conn(self, stream: trio.SSLStream, conn: ConnInfo) -> None:
        decoder = FrameDecoder()
        inflight = trio.Semaphore(self.max_inflight)
        outbox = Outbox(stream)
        last_activity = [trio.current_time()]

        async def send(frame_map: dict) -> None:
            # other answers in flight may finish in this same tick: let them share the write
            await outbox.send(encode_frame(frame_map),
                              linger=inflight.value < self.max_inflight - 1)
            last_activity[0] = trio.current_time()

        async def answer(frame: dict) -> None:
            try:
                response = await self.handler.respond(frame, conn, self.clock_ms())
                try:
                    await send(response)
                except ProtocolError as e:  # response over the frame limit: a node bug
                    await send(error_map(response.get("id"), "internal", e.msg))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                reqs.cancel_scope.cancel()  # peer gone: abandon the rest of this link
            finally:
                inflight.release()

        async def idle_watch(task_status=trio.TASK_STATUS_IGNORED) -> None:
            """Stop reading once the link was silent for idle_timeout with nothing in flight;
            drop it when the peer has not taken an answer for idle_timeout (it stopped reading
            and would otherwise hold its in-flight slots forever). One sleeping task per link
            instead of a timeout around every read and send."""
            idle = self.idle_timeout
            with watch_scope:
                task_status.started()
                while True:
                    started = outbox.write_started  # a write in progress is not idle
                    await trio.sleep_until(last_activity[0] + idle if started is None
                                           else started + idle)
                    now = trio.current_time()
                    started = outbox.write_started
                    if started is not None:
                        if now < started + idle:
                            continue  # the write in progress began (or moved on) since
                        self.counters["stalled_peers"] += 1
                        self.log.info("peer_stopped_reading", client=conn.client)
                        reqs.cancel_scope.cancel()
                        return
                    if now < last_activity[0] + idle:
                        continue  # there was activity meanwhile
                    if inflight.value != self.max_inflight:  # busy is not idle
                        last_activity[0] = now
                        continue
                    read_scope.cancel()
                    return

        read_scope = trio.CancelScope()
        watch_scope = trio.CancelScope()
        self._read_scopes.add(read_scope)
        if self._draining:
            read_scope.cancel()
        try:
            async with trio.open_nursery() as reqs:
                await reqs.start(idle_watch)
                with read_scope:
                    # Answers to inline ops, held until the buffered requests are all handled
                    # (or a cap), then written at once: a pipelining peer's burst of `info`s
                    # costs one TLS write, not one each. Written before every read, so a peer
                    # that stops reading still stops us reading.
                    held: list[bytes] = []
                    held_bytes = 0
                    while True:
                        try:
                            event = decoder.next_event()
                        except ProtocolError as e:
                            self.counters["bad_frames"] += 1
                            self.log.info("bad_frame", client=conn.client, code=e.code,
                                          error=e.msg[:200])
                            held.append(encode_frame(error_map(None, e.code, e.msg)))
                            await outbox.send(b"".join(held))
                            break
                        if event is NEED_DATA or event is CLOSED:
                            if held:
                                await outbox.send(held[0] if len(held) == 1 else b"".join(held))
                                held.clear()
                                held_bytes = 0
                                last_activity[0] = trio.current_time()
                            if event is CLOSED:
                                break
                            try:
                                data = await stream.receive_some(RECEIVE_CHUNK)
                            except trio.BrokenResourceError:
                                data = b""  # TLS peers often close without close_notify
                            last_activity[0] = trio.current_time()
                            decoder.receive_data(data)
                            continue
                        op = event.get("op")
                        if type(op) is str and op in self.handler.inline_ops:
                            response = await self.handler.respond(event, conn, self.clock_ms())
                            try:
                                data = encode_frame(response)
                            except ProtocolError as e:  # over the frame limit: a node bug
                                data = encode_frame(error_map(response.get("id"), "internal",
                                                              e.msg))
                            held.append(data)
                            held_bytes += len(data)
                            if held_bytes >= HELD_ANSWERS_MAX:
                                await outbox.send(b"".join(held))
                                held.clear()
                                held_bytes = 0
                            continue
                        try:  # backpressure: no reads while at the limit
                            inflight.acquire_nowait()
                        except trio.WouldBlock:
                            if held:  # answers that hold no slot must not wait for one
                                await outbox.send(b"".join(held))
                                held.clear()
                                held_bytes = 0
                            await inflight.acquire()
                        reqs.start_soon(answer, event)
                watch_scope.cancel()
                # requests already read still get their answers (bounded by the node's grace)
        finally:
            self._read_scopes.discard(read_scope)
        with trio.move_on_after(1):
            await stream.aclose()
