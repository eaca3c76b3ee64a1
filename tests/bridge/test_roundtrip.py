"""Real sockets on loopback: an authenticated client's bytes reach on_link and come back."""

import os

import trio

from firmware.bridge import BridgeLine, BridgeServer, DecoySite, format_line, open_bridge_stream
from firmware.bridge.auth import pin_of_cert
from firmware.bridge.webcert import pem_to_der


def _line(cert_path, port, secret) -> str:
    with open(cert_path, "rb") as f:
        pin = pin_of_cert(pem_to_der(f.read()))
    return format_line(BridgeLine("127.0.0.1", port, pin, secret))


async def echo(stream, host, port, raw=None):
    while True:
        data = await stream.receive_some()
        if not data:
            return
        await stream.send_all(data)


async def test_authenticated_client_round_trips_bytes(web_identity, secret):
    key_path, cert_path = web_identity
    seen = []

    async def on_link(stream, host, port, raw=None):
        seen.append(host)
        await echo(stream, host, port)

    server = BridgeServer(cert_path=cert_path, key_path=key_path, secret=secret,
                          on_link=on_link, site=DecoySite.stock(1_700_000_000), host="127.0.0.1",
                          port=0)
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(server.run)
        stream = await open_bridge_stream(_line(cert_path, port, secret), timeout=10)
        payload = os.urandom(200_000)
        got = bytearray()
        async with trio.open_nursery() as inner:
            inner.start_soon(stream.send_all, payload)
            while len(got) < len(payload):
                got += await stream.receive_some(65536)
        assert bytes(got) == payload
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert seen == ["127.0.0.1"]
    assert server.counters["links"] == 1
