"""RFC 6455 framing (sans-IO) and the WebSocketStream over trio memory streams."""

import os
import struct

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from firmware.bridge import websocket as ws
from firmware.bridge.stream import WebSocketStream


def read_all(reader):
    out = []
    while (e := reader.next_event()) is not ws.NEED_DATA:
        out.append(e)
    return out


def test_rfc_examples():
    # RFC 6455 section 5.7: a masked "Hello" from a client, and the handshake example
    frame = bytes.fromhex("818537fa213d7f9f4d5158")
    r = ws.FrameReader(expect_masked=True)
    r.receive_data(frame.replace(b"\x81", b"\x82", 1))  # as binary: we refuse text
    assert read_all(r) == [ws.Data(b"Hello")]
    assert ws.accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert ws.encode_frame(ws.OP_BINARY, b"Hello", mask=True,
                           mask_key=bytes.fromhex("37fa213d"))[2:] == frame[2:]


@given(st.binary(max_size=70_000), st.booleans(), st.integers(1, 4096))
def test_round_trip_any_payload_any_split(payload, masked, step):
    data = ws.encode_frame(ws.OP_BINARY, payload, mask=masked)
    r = ws.FrameReader(expect_masked=masked)
    got = []
    for i in range(0, len(data), step):
        r.receive_data(data[i:i + step])
        got += read_all(r)
    assert b"".join(e.payload for e in got) == payload and len(got) == 1


def test_fragments_are_stream_bytes_and_controls_interleave():
    r = ws.FrameReader(expect_masked=True)
    r.receive_data(ws.encode_frame(ws.OP_BINARY, b"ab", mask=True, fin=False)
                   + ws.encode_frame(ws.OP_PING, b"p", mask=True)
                   + ws.encode_frame(ws.OP_CONT, b"cd", mask=True, fin=True)
                   + ws.encode_close(1000, "bye", mask=True))
    assert read_all(r) == [ws.Data(b"ab"), ws.Ping(b"p"), ws.Data(b"cd"),
                           ws.Close(1000, "bye")]


@pytest.mark.parametrize("frame, code", [
    (ws.encode_frame(ws.OP_BINARY, b"x", mask=False), ws.CLOSE_PROTOCOL),  # unmasked client
    (bytes([0xC2, 0x80]) + bytes(4), ws.CLOSE_PROTOCOL),  # RSV1 without an extension
    (ws.encode_frame(ws.OP_TEXT, b"x", mask=True), ws.CLOSE_UNSUPPORTED),
    (ws.encode_frame(ws.OP_CONT, b"x", mask=True), ws.CLOSE_PROTOCOL),  # no message open
    (ws.encode_frame(ws.OP_PING, b"x" * 126, mask=True), ws.CLOSE_PROTOCOL),
    (ws.encode_frame(ws.OP_PING, b"x", mask=True, fin=False), ws.CLOSE_PROTOCOL),
    (bytes([0x83, 0x80]) + bytes(4), ws.CLOSE_PROTOCOL),  # reserved data opcode
    (bytes([0x82, 0xFE, 0x00, 0x05]) + bytes(9), ws.CLOSE_PROTOCOL),  # non-minimal length
    (ws.encode_frame(ws.OP_CLOSE, b"\x03", mask=True), ws.CLOSE_PROTOCOL),
    (ws.encode_frame(ws.OP_CLOSE, struct.pack(">H", 1005), mask=True), ws.CLOSE_PROTOCOL),
    (ws.encode_frame(ws.OP_CLOSE, b"\x03\xe8\xff", mask=True), ws.CLOSE_PROTOCOL),
])
def test_violations_name_their_close_code(frame, code):
    r = ws.FrameReader(expect_masked=True)
    r.receive_data(frame)
    with pytest.raises(ws.WebSocketError) as e:
        read_all(r)
    assert e.value.code == code


def test_oversized_frame_refused_from_its_header_alone():
    r = ws.FrameReader(expect_masked=True, max_frame=1000)
    r.receive_data(bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 40))  # no payload sent
    with pytest.raises(ws.WebSocketError) as e:
        r.next_event()
    assert e.value.code == ws.CLOSE_TOO_BIG


def _pair():
    a, b = trio.testing.memory_stream_pair()
    return WebSocketStream(a, client=True), WebSocketStream(b, client=False)


async def test_stream_carries_bytes_both_ways_and_answers_ping():
    client, server = _pair()
    payload = os.urandom(300_000)  # several 64 KiB frames
    async with trio.open_nursery() as n:
        n.start_soon(client.send_all, payload)
        got = bytearray()
        while len(got) < len(payload):
            got += await server.receive_some(10_000)
    assert bytes(got) == payload
    # a ping from the server side's transport is answered by the client's reader with a pong
    await server.transport.send_all(ws.encode_frame(ws.OP_PING, b"hi", mask=False))
    await server.send_all(b"after")
    assert await client.receive_some() == b"after"
    raw = await server.transport.receive_some()
    r = ws.FrameReader(expect_masked=True)
    r.receive_data(raw)
    assert read_all(r) == [ws.Pong(b"hi")]


async def test_close_frame_ends_the_stream_and_is_answered():
    client, server = _pair()
    await client.aclose()
    assert await server.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"x")


async def test_violation_sends_close_code_and_breaks():
    client, server = _pair()
    await client.transport.send_all(ws.encode_frame(ws.OP_TEXT, b"x", mask=True))
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some()
    raw = await client.transport.receive_some()
    assert raw[:2] == bytes([0x88, 0x02]) and raw[2:4] == struct.pack(">H", ws.CLOSE_UNSUPPORTED)
