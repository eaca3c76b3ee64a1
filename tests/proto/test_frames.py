"""FrameDecoder / encode_frame: feed bytes, assert the exact event lists (h11 style)."""

import struct

import cbor2
import pytest

from firmware.proto import (
    CLOSED,
    MAX_FRAME,
    NEED_DATA,
    FrameDecoder,
    FrameTooLarge,
    MalformedFrame,
    ProtocolError,
    encode_frame,
)

A = {"v": 2, "id": 7, "op": "info", "args": {}}
B = {"v": 2, "id": 8, "ok": {"x": b"\x00" * 40}}


def raw_frame(body):
    return struct.pack(">I", len(body)) + body


def drain(dec):
    """All events until NEED_DATA or CLOSED (inclusive)."""
    out = []
    while True:
        ev = dec.next_event()
        out.append(ev)
        if ev is NEED_DATA or ev is CLOSED:
            return out


def test_encode_frame_layout():
    body = cbor2.dumps(A)
    assert encode_frame(A) == struct.pack(">I", len(body)) + body


def test_one_frame():
    dec = FrameDecoder()
    assert drain(dec) == [NEED_DATA]
    dec.receive_data(encode_frame(A))
    assert drain(dec) == [A, NEED_DATA]
    assert dec.buffered == 0


def test_split_at_every_byte_boundary():
    data = encode_frame(A) + encode_frame(B)
    for cut in range(len(data) + 1):
        dec = FrameDecoder()
        if cut:  # receive_data(b"") would mean EOF
            dec.receive_data(data[:cut])
        first = drain(dec)
        if data[cut:]:
            dec.receive_data(data[cut:])
        second = drain(dec)
        assert [e for e in first + second if e is not NEED_DATA] == [A, B], cut
        assert second[-1] is NEED_DATA


def test_byte_at_a_time():
    data = encode_frame(A) + encode_frame(B)
    dec = FrameDecoder()
    events = []
    for i in range(len(data)):
        dec.receive_data(data[i : i + 1])
        events += drain(dec)
    frames = [e for e in events if e is not NEED_DATA]
    assert frames == [A, B]
    assert events.count(NEED_DATA) == len(data) - 2 + 2  # every byte but the 2 completing ones


def test_many_frames_in_one_chunk():
    frames = [dict(A, id=i) for i in range(50)]
    dec = FrameDecoder()
    dec.receive_data(b"".join(encode_frame(f) for f in frames) + encode_frame(A)[:5])
    assert drain(dec) == frames + [NEED_DATA]
    assert dec.buffered == 5


def test_truncated_frame_needs_data_then_eof_is_error():
    data = encode_frame(B)
    dec = FrameDecoder()
    dec.receive_data(data[:-1])
    assert drain(dec) == [NEED_DATA]
    dec.receive_data(b"")
    with pytest.raises(MalformedFrame, match="closed in the middle of a frame"):
        dec.next_event()


def test_clean_eof():
    dec = FrameDecoder()
    dec.receive_data(encode_frame(A))
    dec.receive_data(b"")
    assert drain(dec) == [A, CLOSED]
    assert dec.next_event() is CLOSED
    with pytest.raises(RuntimeError):
        dec.receive_data(b"x")


def _big_body(n):
    """A CBOR map of exactly n bytes: {"d": bytes}."""
    # a1 61 64 5a <u32 len> payload  -> 8 bytes of overhead
    payload = b"\xab" * (n - 8)
    body = b"\xa1\x61d\x5a" + struct.pack(">I", len(payload)) + payload
    assert len(body) == n
    return body


def test_exact_limit_is_accepted():
    body = _big_body(MAX_FRAME)
    dec = FrameDecoder()
    dec.receive_data(raw_frame(body))
    assert drain(dec) == [{"d": body[8:]}, NEED_DATA]


def test_one_over_limit_fails_from_the_header_alone():
    dec = FrameDecoder()
    dec.receive_data(struct.pack(">I", MAX_FRAME + 1))  # no body sent at all
    with pytest.raises(FrameTooLarge, match="1048577") as info:
        dec.next_event()
    assert info.value.code == "too_large" and info.value.fatal


def test_max_u32_length_fails_from_the_header_alone():
    dec = FrameDecoder()
    dec.receive_data(b"\xff\xff\xff\xff" + b"\xa0")
    with pytest.raises(FrameTooLarge):
        dec.next_event()


def test_zero_length():
    dec = FrameDecoder()
    dec.receive_data(b"\x00\x00\x00\x00\xa0")
    with pytest.raises(MalformedFrame, match="length header is 0") as info:
        dec.next_event()
    assert info.value.code == "bad_frame"


def test_partial_header_waits():
    dec = FrameDecoder()
    dec.receive_data(b"\xff\xff\xff")  # could become a too-large header, but not yet
    assert drain(dec) == [NEED_DATA]
    dec.receive_data(b"\xff")
    with pytest.raises(FrameTooLarge):
        dec.next_event()


def test_decoder_stays_dead_after_error():
    dec = FrameDecoder()
    dec.receive_data(raw_frame(b"\x01") + encode_frame(A))  # body is an int, not a map
    with pytest.raises(MalformedFrame, match="must be a CBOR map"):
        dec.next_event()
    for _ in range(2):
        with pytest.raises(MalformedFrame, match="already failed"):
            dec.next_event()


def test_dead_after_too_large_keeps_class():
    dec = FrameDecoder()
    dec.receive_data(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(FrameTooLarge):
        dec.next_event()
    with pytest.raises(FrameTooLarge, match="already failed"):
        dec.next_event()


def test_smaller_custom_limit():
    dec = FrameDecoder(max_frame=16)
    dec.receive_data(raw_frame(_big_body(16)) + raw_frame(_big_body(17)))
    assert dec.next_event() == {"d": b"\xab" * 8}
    with pytest.raises(FrameTooLarge):
        dec.next_event()


def test_caller_must_drain_before_feeding_past_one_frame():
    dec = FrameDecoder(max_frame=32)
    dec.receive_data(encode_frame(A) * 10)  # one chunk may hold many frames
    with pytest.raises(RuntimeError, match="next_event"):
        dec.receive_data(b"more")
    assert drain(dec) == [A] * 10 + [NEED_DATA]


@pytest.mark.parametrize(
    "body, match",
    [
        (b"\x80", "must be a CBOR map"),  # array
        (b"\xa0\x00", "trailing"),
        (b"\xa1", "not valid CBOR"),  # truncated map
        (b"\xff", "not valid CBOR"),
        (b"\xc1\x1a\x51\x4b\x67\xb0", "tag 1"),  # datetime
    ],
)
def test_bad_bodies(body, match):
    dec = FrameDecoder()
    dec.receive_data(raw_frame(body))
    with pytest.raises(MalformedFrame, match=match):
        dec.next_event()


def test_encode_too_large():
    with pytest.raises(FrameTooLarge, match="over the 1048576-byte limit"):
        encode_frame({"d": b"x" * MAX_FRAME})


def test_errors_are_protocol_errors():
    assert issubclass(FrameTooLarge, MalformedFrame)
    assert issubclass(MalformedFrame, ProtocolError)


def test_feeding_after_error_keeps_raising_protocol_error():
    dec = FrameDecoder()
    dec.receive_data(raw_frame(b"\xa1"))  # truncated map inside a complete frame
    with pytest.raises(MalformedFrame):
        dec.next_event()
    dec.receive_data(encode_frame(A))  # the buffer is not pinned by a leftover view
    with pytest.raises(MalformedFrame, match="already failed"):
        dec.next_event()


def test_max_frame_in_64k_chunks_buffers_at_most_one_frame_plus_one_chunk():
    data = raw_frame(_big_body(MAX_FRAME)) + encode_frame(A)
    dec = FrameDecoder()
    events, peak = [], 0
    for i in range(0, len(data), 65536):
        dec.receive_data(data[i : i + 65536])
        peak = max(peak, dec.buffered)
        events += drain(dec)
    assert [e for e in events if e is not NEED_DATA] == [{"d": b"\xab" * (MAX_FRAME - 8)}, A]
    assert peak <= 4 + MAX_FRAME + 65536  # one frame plus at most one chunk
