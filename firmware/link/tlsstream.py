"""TLS as a trio Stream, driven directly: an `ssl.SSLObject` over memory BIOs.

Why not `trio.SSLStream`: it is built for every use (concurrent callers, renegotiation, conflict
detection), and pays for that on every call - about 34 us per 1 KB send-and-receive here
against 19 us for this class (same OpenSSL, same socket). A relay forwards an onion with two
TLS reads and two TLS writes, so that difference is most of what a hop costs beyond its crypto.
Our links have one reader task and one writer (`Outbox`) per stream, so the machinery is not
needed: a write is `SSLObject.write` + one transport send; a read pulls ciphertext only when
OpenSSL wants more. Whatever OpenSSL has to send is flushed at once (handshake messages, the
alert on a failed handshake, session tickets), so the stream behaves like OpenSSL itself.
"""

import ssl

import trio

__all__ = ["TlsStream"]

RECEIVE_CHUNK = 65536


class TlsStream(trio.abc.Stream):
    """One TLS connection over `transport`. Not for concurrent senders or readers (one of each
    at a time, as every link here has)."""

    def __init__(self, transport: trio.abc.Stream, ctx: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None, initial: bytes = b""):
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        if initial:
            self._incoming.write(initial)
        self.ssl_object = ctx.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                       server_hostname=server_hostname)
        self._sending = False
        self._send_done = trio.lowlevel.ParkingLot()
        self._closed = False

    # -- what pinning and the listener read -----------------------------------------------------

    def getpeercert(self, binary_form: bool = False):
        return self.ssl_object.getpeercert(binary_form)

    def version(self) -> str | None:
        return self.ssl_object.version()

    def channel_binding(self) -> bytes | None:
        """tls-unique of this session; None unless TLS 1.3 (firmware/bridge/auth.py)."""
        if self.ssl_object.version() != "TLSv1.3":
            return None
        return self.ssl_object.get_channel_binding("tls-unique")

    # -- I/O --------------------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        while self._sending:  # a read's flush (rare: a TLS 1.3 key update) while we write
            await self._send_done.park()
        self._sending = True
        try:
            await self.transport.send_all(data)
        finally:
            self._sending = False
            self._send_done.unpark_all()

    async def _flush(self) -> None:
        if self._outgoing.pending:
            await self._send(self._outgoing.read())

    async def _fill(self) -> bool:
        """More ciphertext from the peer; False at its end of stream (fed to OpenSSL as EOF)."""
        try:
            data = await self.transport.receive_some(RECEIVE_CHUNK)
        except trio.BrokenResourceError:
            data = b""
        if data:
            self._incoming.write(data)
            return True
        self._incoming.write_eof()
        return False

    async def _fail(self, e: Exception):
        try:  # the alert OpenSSL wrote for this error goes out, as a TLS library's would
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        raise trio.BrokenResourceError(f"TLS: {e}") from None

    async def do_handshake(self) -> None:
        eof = False
        while True:
            try:
                self.ssl_object.do_handshake()
                break
            except ssl.SSLWantReadError:
                if eof:
                    raise trio.BrokenResourceError("peer closed during the TLS handshake") from None
                await self._flush()
                eof = not await self._fill()
            except ssl.SSLError as e:
                await self._fail(e)
        await self._flush()  # our Finished (and a server's session tickets), right away

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        n = max_bytes or RECEIVE_CHUNK
        while True:
            try:
                data = self.ssl_object.read(n)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()  # at EOF, OpenSSL says so on the next read
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as e:
                await self._fail(e)
            if self._outgoing.pending:  # e.g. an answer to the peer's key update
                await self._flush()
            return data

    async def send_all(self, data) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        try:
            self.ssl_object.write(data)
        except ssl.SSLError as e:
            await self._fail(e)
        await self._send(self._outgoing.read())

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self, *, notify: bool = True) -> None:
        """Close; with `notify`, send close_notify first (not waiting for the peer's)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if notify:
                try:
                    self.ssl_object.unwrap()
                except ssl.SSLError:
                    pass  # want-read for the peer's close_notify: we do not wait for it
                with trio.move_on_after(1):
                    await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self.transport.aclose()
