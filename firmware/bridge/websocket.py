"""RFC 6455 WebSocket framing, sans-IO, for carrying a byte stream (the homenode link).

Only what a byte pipe needs, strictly: binary data frames (a message's fragments are simply more
bytes of the stream), ping/pong, close. Text frames, reserved bits (no extension is negotiated),
unmasked client frames or masked server frames, fragmented or oversized control frames and
frames over `max_frame` are protocol errors: the connection answers with a close frame carrying
the RFC's code and ends. Lengths are checked before any payload is buffered.
"""

import base64
import hashlib
import os
import struct
from dataclasses import dataclass

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_UNSUPPORTED, CLOSE_TOO_BIG = 1000, 1002, 1003, 1009
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_MAX_FRAME = 1 << 20  # bytes of payload; our sender never writes frames over 64 KiB


def accept_value(key: bytes | str) -> str:
    """`Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2)."""
    if isinstance(key, str):
        key = key.encode("ascii")
    return base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest()).decode("ascii")


class WebSocketError(Exception):
    """The peer broke the framing rules; `code` is the close code to answer with."""

    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code


@dataclass(frozen=True)
class Data:
    payload: bytes


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class Close:
    code: int | None
    reason: str


NEED_DATA = object()


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ k).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, *, mask: bool, fin: bool = True,
                 mask_key: bytes | None = None) -> bytes:
    """One frame. Clients must `mask` (a fresh random key per frame unless one is given)."""
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack(">Q", n)
    if not mask:
        return bytes(head) + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return bytes(head) + key + _mask(payload, key)


def encode_close(code: int, reason: str = "", *, mask: bool) -> bytes:
    return encode_frame(OP_CLOSE, struct.pack(">H", code) + reason.encode()[:123], mask=mask)


class FrameReader:
    """Turns received bytes into Data / Ping / Pong / Close events.

    `expect_masked`: True on the server (client frames are masked), False on the client."""

    def __init__(self, *, expect_masked: bool, max_frame: int = DEFAULT_MAX_FRAME):
        self.expect_masked = expect_masked
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_message = False  # inside a fragmented data message

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_event(self):
        """The next event, or NEED_DATA; WebSocketError on a framing violation."""
        buf = self._buf
        if len(buf) < 2:
            return NEED_DATA
        b0, b1 = buf[0], buf[1]
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if b0 & 0x70:
            raise WebSocketError(CLOSE_PROTOCOL, "reserved bits set (no extension negotiated)")
        masked = bool(b1 & 0x80)
        if masked != self.expect_masked:
            raise WebSocketError(CLOSE_PROTOCOL, "client frames must be masked and server "
                                 "frames must not be")
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return NEED_DATA
            n = struct.unpack_from(">H", buf, 2)[0]
            pos = 4
            if n < 126:
                raise WebSocketError(CLOSE_PROTOCOL, "non-minimal frame length")
        elif n == 127:
            if len(buf) < 10:
                return NEED_DATA
            n = struct.unpack_from(">Q", buf, 2)[0]
            pos = 10
            if n < 65536 or n >> 63:
                raise WebSocketError(CLOSE_PROTOCOL, "bad 64-bit frame length")
        control = opcode >= 0x8
        if control:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise WebSocketError(CLOSE_PROTOCOL, f"unknown control opcode {opcode:#x}")
            if n > 125 or not fin:
                raise WebSocketError(CLOSE_PROTOCOL, "control frames are unfragmented, <= 125 B")
        elif opcode == OP_TEXT:
            raise WebSocketError(CLOSE_UNSUPPORTED, "text frames are not accepted (binary only)")
        elif opcode == OP_BINARY:
            if self._in_message:
                raise WebSocketError(CLOSE_PROTOCOL, "new message inside a fragmented one")
        elif opcode == OP_CONT:
            if not self._in_message:
                raise WebSocketError(CLOSE_PROTOCOL, "continuation frame outside a message")
        else:
            raise WebSocketError(CLOSE_PROTOCOL, f"unknown data opcode {opcode:#x}")
        if n > self.max_frame:
            raise WebSocketError(CLOSE_TOO_BIG, f"frame of {n} bytes is over {self.max_frame}")
        if masked:
            pos += 4
        if len(buf) < pos + n:
            return NEED_DATA
        payload = bytes(buf[pos:pos + n])
        if masked:
            payload = _mask(payload, bytes(buf[pos - 4:pos]))
        del buf[:pos + n]
        if not control:
            self._in_message = not fin
            return Data(payload)
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        return _parse_close(payload)


def _parse_close(payload: bytes) -> Close:
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        raise WebSocketError(CLOSE_PROTOCOL, "close frame with a 1-byte body")
    code = struct.unpack_from(">H", payload)[0]
    if code < 1000 or code in (1004, 1005, 1006, 1015) or 1016 <= code < 3000 or code >= 5000:
        raise WebSocketError(CLOSE_PROTOCOL, f"close code {code} is not allowed on the wire")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(CLOSE_PROTOCOL, "close reason is not UTF-8") from None
    return Close(code, reason)
