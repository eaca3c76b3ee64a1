"""BridgeServer behaviour: deadlines (virtual time over memory streams), shares, upgrade edge
cases, and the client's errors on real loopback sockets."""

import os
import ssl

import pytest
import trio
import trio.testing

from firmware.bridge import (
    BridgeLine,
    BridgePinMismatch,
    BridgeRefused,
    BridgeServer,
    DecoySite,
    format_line,
    open_bridge_stream,
)
from firmware.bridge import websocket as ws
from firmware.bridge.auth import auth_key, pin_of_cert, websocket_key
from firmware.bridge.server import ConnectionShares
from firmware.bridge.webcert import pem_to_der


def make_server(web_identity, secret, on_link=None, **kw):
    key_path, cert_path = web_identity

    async def echo(stream, host, port, raw=None):
        while data := await stream.receive_some():
            await stream.send_all(data)

    return BridgeServer(cert_path=cert_path, key_path=key_path, secret=secret,
                        on_link=on_link or echo, site=DecoySite.stock(1_700_000_000),
                        host="127.0.0.1", port=0, **kw)


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def connected(server, nursery):
    """A TLS client over a memory stream to `server.serve_connection`; (client, done event)."""
    c, s = trio.testing.memory_stream_pair()
    done = trio.Event()

    async def serve():
        try:
            await server.serve_connection(s, "192.0.2.1", 40000)
        finally:
            done.set()

    nursery.start_soon(serve)
    client = trio.SSLStream(c, client_ctx())
    return client, done


async def read_until_closed(stream) -> bytes:
    out = b""
    while True:
        try:
            d = await stream.receive_some()
        except trio.BrokenResourceError:
            return out + b"<broken>"
        if not d:
            return out + b"<eof>"
        out += d


def test_shares_per_address_and_total():
    shares = ConnectionShares(per_ip=2, total=3)
    assert shares.admit("a") and shares.admit("a")
    assert not shares.admit("a")  # the address's share is full
    assert shares.admit("b")
    assert not shares.admit("c")  # the total is full
    shares.release("a")
    assert shares.admit("c") and not shares.admit("a")
    for h in ("a", "b", "c"):
        shares.release(h)
    assert shares.active == 0 and shares.admit("a")


async def test_silent_connection_closed_at_the_handshake_deadline(autojump_clock, web_identity,
                                                                  secret):
    server = make_server(web_identity, secret, header_timeout=60)
    async with trio.open_nursery() as n:
        c, s = trio.testing.memory_stream_pair()
        start = trio.current_time()
        await server.serve_connection(s, "192.0.2.1", 1)
        assert trio.current_time() - start == pytest.approx(60)
        n.cancel_scope.cancel()


async def test_half_request_closed_at_header_deadline(autojump_clock, web_identity, secret):
    server = make_server(web_identity, secret, header_timeout=60)
    async with trio.open_nursery() as n:
        client, done = await connected(server, n)
        await client.do_handshake()
        t0 = trio.current_time()
        await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert await read_until_closed(client) == b"<broken>"  # no close_notify, as nginx
        assert trio.current_time() - t0 == pytest.approx(60, abs=0.5)
        await done.wait()


async def test_idle_keepalive_closed_after_65s_with_close_notify(autojump_clock, web_identity,
                                                                 secret):
    server = make_server(web_identity, secret)
    async with trio.open_nursery() as n:
        client, done = await connected(server, n)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"</html>\n" not in head:
            head += await client.receive_some()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        t0 = trio.current_time()
        assert await read_until_closed(client) == b"<eof>"
        assert trio.current_time() - t0 == pytest.approx(65, abs=0.5)
        await done.wait()


async def test_slow_drip_of_headers_still_bounded_by_one_deadline(autojump_clock, web_identity,
                                                                  secret):
    """A stranger sending one header byte every 30 s cannot keep the connection past 60 s."""
    server = make_server(web_identity, secret)
    async with trio.open_nursery() as n:
        client, done = await connected(server, n)
        await client.do_handshake()
        t0 = trio.current_time()
        sent = 0
        with pytest.raises(trio.BrokenResourceError):
            for b in b"GET / HTTP/1.1\r\nHost: xxxxxxxxxxxx":
                await client.send_all(bytes([b]))
                sent += 1
                await trio.sleep(30)
        await done.wait()
        assert trio.current_time() - t0 <= 61 and sent >= 2


async def test_upgrade_with_first_frame_in_the_same_write(web_identity, secret):
    """Bytes after the upgrade request (a client that does not wait for 101) reach the link."""
    server = make_server(web_identity, secret)
    async with trio.open_nursery() as n:
        client, done = await connected(server, n)
        await client.do_handshake()
        key = websocket_key(auth_key(secret), client.get_channel_binding("tls-unique"),
                            server.pin)
        await client.send_all(
            f"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            + ws.encode_frame(ws.OP_BINARY, b"early bytes", mask=True))
        got = b""
        while not got.endswith(b"early bytes"):
            got += await client.receive_some()
        assert got.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert got.endswith(ws.encode_frame(ws.OP_BINARY, b"early bytes", mask=False))
        await client.aclose()
        await done.wait()
    assert server.counters["links"] == 1


async def test_valid_key_without_upgrade_headers_is_just_a_request(web_identity, secret):
    server = make_server(web_identity, secret)
    async with trio.open_nursery() as n:
        client, done = await connected(server, n)
        await client.do_handshake()
        key = websocket_key(auth_key(secret), client.get_channel_binding("tls-unique"),
                            server.pin)
        await client.send_all(f"GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: {key}\r\n"
                              "Connection: close\r\n\r\n".encode())
        assert (await read_until_closed(client)).startswith(b"HTTP/1.1 200 OK\r\n")
        await done.wait()
    assert server.counters["links"] == 0


# -- the client against a real server on loopback -----------------------------------------------


def line_for(web_identity, port, secret, pin=None) -> str:
    with open(web_identity[1], "rb") as f:
        real_pin = pin_of_cert(pem_to_der(f.read()))
    return format_line(BridgeLine("127.0.0.1", port, pin or real_pin, secret))


async def test_wrong_secret_is_refused_with_a_clear_error(web_identity, secret):
    server = make_server(web_identity, secret)
    async with trio.open_nursery() as n:
        _, port = await n.start(server.run)
        with pytest.raises(BridgeRefused, match="secret in the bridge line is wrong"):
            await open_bridge_stream(line_for(web_identity, port, os.urandom(32)), timeout=10)
        assert server.counters["links"] == 0 and server.counters["requests"] == 1
        n.cancel_scope.cancel()


async def test_wrong_pin_sends_nothing(web_identity, secret):
    server = make_server(web_identity, secret)
    async with trio.open_nursery() as n:
        _, port = await n.start(server.run)
        with pytest.raises(BridgePinMismatch, match="Nothing was sent"):
            await open_bridge_stream(line_for(web_identity, port, secret, pin=bytes(32)),
                                     timeout=10)
        await trio.testing.wait_all_tasks_blocked()
        assert server.counters["requests"] == 0
        n.cancel_scope.cancel()


async def test_nothing_listening_is_a_connection_error(web_identity, secret):
    s = trio.socket.socket()
    await s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on
    with pytest.raises(ConnectionError, match="cannot connect"):
        await open_bridge_stream(line_for(web_identity, port, secret), timeout=10)


async def test_bad_line_text_raises_line_error(web_identity):
    from firmware.bridge import BridgeLineError
    with pytest.raises(BridgeLineError):
        await open_bridge_stream("homenode-bridge://x", timeout=1)
