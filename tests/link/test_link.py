"""StreamLink and LinkPool against a real listener over TLS on memory streams, virtual time;
plus the Dialer on real loopback sockets (pinning)."""

from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from firmware.identity import Identity
from firmware.link import (
    Dialer,
    LinkDown,
    LinkPool,
    LinkTimeout,
    PinMismatch,
    StreamLink,
    open_link,
    server_ssl_context,
)
from firmware.proto.errors import BadResponse, UnknownOp
from firmware.proto.frames import encode_frame
from tests.listener_harness import NODE, serve


async def test_requests_errors_and_ids(harness, autojump_clock):
    async with trio.open_nursery() as n:
        async with open_link(await serve(harness, n)) as link:
            assert (await link.request("info", {}))["node_id"] == NODE.node_id
            with pytest.raises(UnknownOp):  # the node's error frame raises its code's class
                await link.request("no_such_op", {})
            assert link.is_open  # a request-level error leaves the link usable
            assert await link.request("nap", {"ms": 5}) == {"ms": 5}
        n.cancel_scope.cancel()


async def test_a_request_without_an_answer_times_out_and_the_link_stays(harness,
                                                                         autojump_clock):
    async with trio.open_nursery() as n:
        async with open_link(await serve(harness, n)) as link:
            t0 = trio.current_time()
            with pytest.raises(LinkTimeout):
                await link.request("block", {"n": 1}, timeout=7)
            assert trio.current_time() - t0 == pytest.approx(7, abs=0.01)
            assert await link.request("nap", {"ms": 1}, timeout=7) == {"ms": 1}
            harness.release.set()
        n.cancel_scope.cancel()


async def test_waiting_requests_fail_when_the_peer_closes(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    results = []
    async with trio.open_nursery() as n:
        link = StreamLink(client)
        await n.start(link.run)

        async def ask(i):
            try:
                await link.request("info", {})
            except LinkDown as e:
                results.append(str(e))

        for i in range(3):
            n.start_soon(ask, i)
        await trio.testing.wait_all_tasks_blocked()
        await server.aclose()
    assert len(results) == 3 and all("closed" in r for r in results)
    assert not link.is_open
    with pytest.raises(LinkDown):
        await link.request("info", {})


async def test_a_link_level_error_fails_everything_waiting(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as n:
        link = StreamLink(client)
        await n.start(link.run)
        got = []

        async def ask():
            try:
                await link.request("info", {})
            except Exception as e:
                got.append(type(e).__name__)

        n.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        await server.send_all(encode_frame({"v": 2, "id": None, "err": {
            "code": "bad_frame", "msg": "your stream is broken"}}))
        await trio.testing.wait_all_tasks_blocked()
        await server.send_all(encode_frame({"v": 9, "id": 2, "ok": {}}))
        n.cancel_scope.cancel()
    assert got == ["MalformedFrame"]


async def test_an_answer_of_another_protocol_version_is_a_bad_response(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as n:
        link = StreamLink(client)
        await n.start(link.run)

        async def answer():
            await trio.testing.wait_all_tasks_blocked()
            await server.send_all(encode_frame({"v": 9, "id": 1, "ok": {}}))

        n.start_soon(answer)
        with pytest.raises(BadResponse, match="protocol version"):
            await link.request("info", {})
        n.cancel_scope.cancel()


# -- the pool ---------------------------------------------------------------------------------


class MemoryDial:
    """A pool's `dial` that connects to the harness's listener over memory streams."""

    def __init__(self, harness, nursery, fail=()):
        self.harness, self.nursery, self.fail = harness, nursery, set(fail)
        self.opened = []

    def __call__(self, node_id, host, port, timeout):
        @asynccontextmanager
        async def dial():
            self.opened.append((node_id, host, port))
            if (host, port) in self.fail:
                raise ConnectionRefusedError(f"connection to {host}:{port} refused")
            if port == 9:
                await trio.sleep_forever()  # a black hole: the pool's deadline ends it
            async with open_link(await serve(self.harness, self.nursery)) as link:
                yield link

        return dial()


async def test_the_pool_shares_one_link_per_peer_and_closes_it_when_idle(harness,
                                                                        autojump_clock):
    async with trio.open_nursery() as n:
        dial = MemoryDial(harness, n)
        pool = LinkPool(dial, idle_s=60)
        await n.start(pool.run)
        async with trio.open_nursery() as many:  # ten callers at once: one connection
            for i in range(10):
                many.start_soon(pool.request, NODE.node_id, ("10.0.0.1", 1), "nap", {"ms": i})
        assert len(dial.opened) == 1 and pool.open_count() == 1
        await pool.request(NODE.node_id, ("10.0.0.2", 1), "info", {})
        assert pool.open_count() == 2 and len(dial.opened) == 2
        await trio.sleep(60 + 20)  # idle_s plus one sweep
        assert pool.open_count() == 0 and pool.counters["closed_idle"] == 2
        assert (await pool.request(NODE.node_id, ("10.0.0.1", 1), "info", {}))["node_id"] \
            == NODE.node_id  # reopened on demand
        n.cancel_scope.cancel()


async def test_connect_failures_and_black_holes_are_linkdown(harness, autojump_clock):
    async with trio.open_nursery() as n:
        pool = LinkPool(MemoryDial(harness, n, fail=[("10.0.0.3", 1)]), connect_timeout=5)
        await n.start(pool.run)
        with pytest.raises(LinkDown, match="refused"):
            await pool.request(NODE.node_id, ("10.0.0.3", 1), "info", {})
        t0 = trio.current_time()
        with pytest.raises(LinkDown, match="no link within 5 s"):
            await pool.request(NODE.node_id, ("10.0.0.4", 9), "info", {})
        assert trio.current_time() - t0 == pytest.approx(5, abs=0.01)
        assert pool.counters["failed"] == 2 and pool.open_count() == 0
        n.cancel_scope.cancel()


async def test_routes_are_asked_first_and_a_full_pool_says_so(harness, autojump_clock):
    class Routed:
        calls = []

        async def request(self, op, args, *, timeout=None):
            self.calls.append(op)
            return {"via": "relay"}

    relayed = b"r" * 32
    async with trio.open_nursery() as n:
        dial = MemoryDial(harness, n)
        pool = LinkPool(dial, routes=lambda nid: Routed() if nid == relayed else None,
                        max_links=1)
        await n.start(pool.run)
        assert await pool.request(relayed, ("10.0.0.9", 1), "onion", {}) == {"via": "relay"}
        assert dial.opened == []  # no connection of ours for a routed node

        async def hold_the_only_link():
            await pool.request(NODE.node_id, ("10.0.0.1", 1), "block", {"n": 1})

        n.start_soon(hold_the_only_link)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(LinkDown, match="1 links open and all busy"):
            await pool.request(NODE.node_id, ("10.0.0.2", 1), "info", {})
        harness.release.set()
        n.cancel_scope.cancel()


# -- the dialer on real sockets ------------------------------------------------------------------


async def test_pinning_refuses_a_node_with_another_key():
    ident = Identity(b"\x06" * 32)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    received = []

    async def serve_tls(tcp):
        s = trio.SSLStream(tcp, server_ssl_context(ident), server_side=True)
        try:
            await s.do_handshake()
            received.append(await s.receive_some(100))
        except trio.BrokenResourceError:
            received.append(b"")

    async with trio.open_nursery() as n:
        await n.start(trio.serve_listeners, serve_tls, listeners)
        with pytest.raises(PinMismatch, match="refusing to talk"):
            await Dialer().open("127.0.0.1", port, NODE.node_id)
        stream = await Dialer().open("127.0.0.1", port, ident.node_id)
        await stream.send_all(b"hi")
        with trio.fail_after(5):
            while len(received) < 2:
                await trio.sleep(0.01)
        await stream.aclose()
        n.cancel_scope.cancel()
    assert sorted(received) == [b"", b"hi"]  # nothing was sent to the wrong node
