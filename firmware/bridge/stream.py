"""A trio byte Stream over an upgraded WebSocket, so the homenode link runs on it unchanged.

Bytes written go out as binary frames (at most 64 KiB each, masked on the client side); data
frames received, fragmented or not, are just more bytes. Pings are answered with pongs; a close
frame is answered once and ends the stream (receive_some returns b""). A framing violation sends
the RFC's close code and raises BrokenResourceError. Writes (ours and pongs) are serialised by a
lock, so `send_all` and `receive_some` may run in two tasks at once as trio's Stream allows.
"""

import trio

from firmware.bridge import websocket as ws

FRAME_MAX_OUT = 65536


class WebSocketStream(trio.abc.Stream):
    def __init__(self, transport: trio.abc.Stream, *, client: bool, initial: bytes = b"",
                 max_frame: int = ws.DEFAULT_MAX_FRAME):
        self.transport = transport
        self._client = client
        self._reader = ws.FrameReader(expect_masked=not client, max_frame=max_frame)
        self._reader.receive_data(initial)
        self._write_lock = trio.Lock()
        self._recv_guard = trio.StrictFIFOLock()
        self._send_guard = trio.StrictFIFOLock()
        self._pending = bytearray()  # data received beyond what a receive_some asked for
        self._close_sent = False
        self._eof = False
        self._closed = False

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            await self.transport.send_all(data)

    async def send_all(self, data) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        if self._send_guard.locked():
            raise trio.BusyResourceError("another task is in send_all")
        async with self._send_guard:
            if self._close_sent:
                raise trio.BrokenResourceError("websocket is closing")
            data = bytes(data)
            if not data:
                await trio.lowlevel.checkpoint()
                return
            frames = [ws.encode_frame(ws.OP_BINARY, data[i:i + FRAME_MAX_OUT], mask=self._client)
                      for i in range(0, len(data), FRAME_MAX_OUT)]
            await self._write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        if self._recv_guard.locked():
            raise trio.BusyResourceError("another task is in receive_some")
        async with self._recv_guard:
            while not self._pending and not self._eof:
                try:
                    event = self._reader.next_event()
                except ws.WebSocketError as e:
                    await self._send_close(e.code)
                    raise trio.BrokenResourceError(f"websocket: {e}") from None
                if event is ws.NEED_DATA:
                    data = await self.transport.receive_some(65536)
                    if not data:
                        self._eof = True  # closed without a close frame
                        break
                    self._reader.receive_data(data)
                elif isinstance(event, ws.Data):
                    self._pending += event.payload
                elif isinstance(event, ws.Ping):
                    if not self._close_sent:
                        await self._write(ws.encode_frame(ws.OP_PONG, event.payload,
                                                          mask=self._client))
                elif isinstance(event, ws.Close):
                    await self._send_close(ws.CLOSE_NORMAL if event.code else None)
                    self._eof = True
                # Pong: nothing to do (we send no pings)
            if not self._pending:
                await trio.lowlevel.checkpoint()
                return b""
            n = len(self._pending) if max_bytes is None else max_bytes
            out = bytes(self._pending[:n])
            del self._pending[:n]
            return out

    async def _send_close(self, code: int | None) -> None:
        if self._close_sent:
            return
        self._close_sent = True
        frame = (ws.encode_close(code, mask=self._client) if code is not None
                 else ws.encode_frame(ws.OP_CLOSE, b"", mask=self._client))
        try:
            with trio.move_on_after(5):
                await self._write(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._send_close(ws.CLOSE_NORMAL)
        finally:
            self._closed = True
            await self.transport.aclose()
