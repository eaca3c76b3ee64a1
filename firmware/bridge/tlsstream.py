"""Server-side TLS as a trio Stream that writes what OpenSSL writes, when OpenSSL writes it.

Why not trio.SSLStream here: to look like nginx the bridge must behave like OpenSSL driven
directly, and SSLStream deliberately differs in two visible ways: on a failed handshake it drops
the alert OpenSSL produced (nginx sends it: `handshake_failure`, `protocol_version`, ...), and it
holds TLS 1.3 session tickets back until the first application write (nginx sends them as soon as
the handshake completes). This class drives an `ssl.SSLObject` over memory BIOs and flushes
every byte OpenSSL produced right away. The client side keeps using trio.SSLStream.
"""

import ssl

import trio

RECEIVE_CHUNK = 65536


class TlsServerStream(trio.abc.Stream):
    def __init__(self, transport: trio.abc.Stream, ctx: ssl.SSLContext, *, initial: bytes = b""):
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._incoming.write(initial)
        self.ssl_object = ctx.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._write_lock = trio.Lock()
        self._closed = False

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            async with self._write_lock:
                await self.transport.send_all(data)

    async def _fill(self) -> bool:
        """Read more ciphertext; False at end of stream (fed to OpenSSL as EOF)."""
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
        try:  # the alert OpenSSL wrote for this error goes out, as under nginx
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
        await self._flush()  # server Finished... and the session tickets, right away

    def version(self) -> str | None:
        return self.ssl_object.version()

    def channel_binding(self) -> bytes | None:
        """tls-unique of this session (see auth); None unless TLS 1.3."""
        if self.ssl_object.version() != "TLSv1.3":
            return None
        return self.ssl_object.get_channel_binding("tls-unique")

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        n = max_bytes or RECEIVE_CHUNK
        while True:
            try:
                return self.ssl_object.read(n)
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    continue  # OpenSSL now reports EOF (clean or not) on the next read
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as e:
                await self._fail(e)

    async def send_all(self, data) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        try:
            self.ssl_object.write(bytes(data))
        except ssl.SSLError as e:
            await self._fail(e)
        await self._flush()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self, *, notify: bool = True) -> None:
        """Close; with `notify`, send close_notify first (nginx does, except after a timeout)."""
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
