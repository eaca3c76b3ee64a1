"""`StorageCalls` is the typed half of a client; the transport (`request`) is each client's own."""

import pytest

from firmware.client import StorageCalls


def test_a_client_class_without_a_transport_cannot_be_made():
    class NoTransport(StorageCalls):
        pass

    with pytest.raises(TypeError, match="request"):
        NoTransport()


async def test_the_typed_calls_go_through_the_client_s_request():
    sent = []

    class Recorder(StorageCalls):
        _clock_ms = staticmethod(lambda: 1_800_000_000_000)

        async def request(self, op, args, *, recipient=None):
            sent.append((op, args, recipient))
            return "typed result"

    rcpt = bytes(range(32))
    assert await Recorder().store(rcpt, b"sealed", ttl_ms=60_000) == "typed result"
    assert sent == [("store", {"recipient": rcpt, "ns": 0, "ts": 1_800_000_000_000,
                               "ttl": 60_000, "data": b"sealed"}, rcpt)]
