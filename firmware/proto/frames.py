"""Length-prefixed CBOR frames: an encoder and an h11-style incremental decoder.

Wire format (docs/protocol.md): ``u32 big-endian length N`` then N bytes of one CBOR map,
``1 <= N <= MAX_FRAME``. The decoder is sans-IO: feed it bytes with ``receive_data`` and pull
frames with ``next_event`` until it says ``NEED_DATA``. It checks the length from the header
before waiting for the body, so a peer can never make it hold more than one header plus one
maximal body (plus whatever the caller hands it in one ``receive_data`` call).

After a ProtocolError the decoder is dead: every later ``next_event`` raises again, because the
byte stream can no longer be split into frames.
"""

from .codec import decode_map, encode_map
from .errors import FrameTooLarge, MalformedFrame
from .limits import FRAME_HEADER_SIZE, MAX_DATA, MAX_FRAME, MAX_HASHES

# What the sender can do about it, whatever the request was.
_WHAT_FITS = (f"a message's data is at most {MAX_DATA:,} bytes (split a bigger one over several "
              f"messages), a hash list at most {MAX_HASHES:,} entries")

__all__ = ["NEED_DATA", "CLOSED", "FrameDecoder", "encode_frame"]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = name

    def __repr__(self):
        return self._name

    def __reduce__(self):
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
"""``next_event`` result: no complete frame buffered; call ``receive_data`` with more bytes."""

CLOSED = _Sentinel("CLOSED")
"""``next_event`` result: the peer closed cleanly (``receive_data(b"")``) between frames."""


def encode_frame(obj, max_frame=MAX_FRAME):
    """One frame (length header + CBOR map) for ``obj``; FrameTooLarge if the body is too big."""
    body = encode_map(obj)
    n = len(body)
    if n > max_frame:
        raise FrameTooLarge(
            f"encoded frame body is {n} bytes, over the {max_frame}-byte limit of one frame; "
            f"{_WHAT_FITS}"
        )
    return n.to_bytes(4, "big") + body


class FrameDecoder:
    """Incremental frame splitter and decoder for one direction of one link."""

    __slots__ = ("_buf", "_max_frame", "_eof", "_error")

    def __init__(self, max_frame=MAX_FRAME):
        if not 1 <= max_frame <= 2**32 - 1:
            raise ValueError(f"max_frame must be 1..2**32-1, got {max_frame}")
        self._buf = bytearray()
        self._max_frame = max_frame
        self._eof = False
        self._error = None

    @property
    def buffered(self):
        """Bytes received but not yet returned as frames."""
        return len(self._buf)

    @property
    def pending_size(self):
        """The announced body size of a frame received only in part (0 while even its 4-byte
        header is incomplete), or None when no partial frame is buffered. Lets a listener put a
        deadline on a frame that trickles in."""
        have = len(self._buf)
        if have == 0:
            return None
        if have < FRAME_HEADER_SIZE:
            return 0
        n = int.from_bytes(self._buf[:FRAME_HEADER_SIZE], "big")
        return n if have < FRAME_HEADER_SIZE + n else None

    def receive_data(self, data):
        """Add bytes from the peer; ``b""`` means the peer closed its side (EOF).

        Call ``next_event`` until it returns NEED_DATA before adding more, so the buffer stays
        bounded; a caller that keeps feeding without draining gets a RuntimeError.
        """
        if self._eof:
            raise RuntimeError("receive_data after EOF (receive_data(b'') was already called)")
        if not data:
            self._eof = True
            return
        if len(self._buf) > FRAME_HEADER_SIZE + self._max_frame:
            raise RuntimeError(
                "FrameDecoder buffer is over one maximal frame: call next_event() until "
                "NEED_DATA before feeding more bytes"
            )
        self._buf += data

    def next_event(self):
        """Return the next frame (a dict), NEED_DATA, or CLOSED; raise a ProtocolError if broken."""
        if self._error is not None:
            raise type(self._error)(
                f"frame decoder already failed, close the link ({self._error.msg})"
            )
        try:
            return self._next_event()
        except MalformedFrame as exc:
            self._error = exc
            raise

    def _next_event(self):
        buf = self._buf
        have = len(buf)
        if have >= FRAME_HEADER_SIZE:
            n = int.from_bytes(buf[:FRAME_HEADER_SIZE], "big")
            if n > self._max_frame:
                raise FrameTooLarge(
                    f"frame length header says {n} bytes, over the {self._max_frame}-byte "
                    f"limit of one frame; {_WHAT_FITS}"
                )
            if n == 0:
                raise MalformedFrame(
                    "frame length header is 0; every frame must carry a CBOR map (>= 1 byte)"
                )
            end = FRAME_HEADER_SIZE + n
            if have >= end:
                # decode straight from the buffer (one copy fewer); views must be released
                # before the bytearray can shrink
                with memoryview(buf) as view, view[FRAME_HEADER_SIZE:end] as body:
                    frame = decode_map(body)
                del buf[:end]
                return frame
        if self._eof:
            if have:
                raise MalformedFrame(
                    f"connection closed in the middle of a frame ({have} bytes of an unfinished "
                    "frame buffered); the peer must send whole frames"
                )
            return CLOSED
        return NEED_DATA
