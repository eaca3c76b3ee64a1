"""The listener's accept path and memory on real loopback sockets, in-process.

Every wait here is on an event the code under test causes (a reset, a close, `drained`), with
`fail_after` only as a guard against a hang.
"""

import gc
import socket

import pytest
import trio

from firmware.link import client_ssl_context, open_link
from firmware.link.tlsstream import TlsStream
from firmware.serve.accepting import accept_ready, bind_tcp
from firmware.serve.conn_policy import ConnLimits
from firmware.serve.conn_table import TableLimits
from firmware.serve.reclaim import Reclaimer
from tests.listener_harness import Harness, serve

GUARD_S = 20


def server_tls_streams() -> int:
    """Server-side TLS streams Python still holds (live, or garbage awaiting the collector)."""
    return sum(1 for o in gc.get_objects()
               if isinstance(o, TlsStream) and o.ssl_object.server_side)


async def tcp_from(source: str, addr) -> trio.SocketStream:
    return await trio.open_tcp_stream(*addr, local_address=source)


async def closed_by_peer(stream: trio.SocketStream) -> bool:
    """True once the node closed or reset the connection."""
    try:
        with trio.fail_after(GUARD_S):
            return await stream.receive_some(1) == b""
    except trio.BrokenResourceError:  # (a reset)
        return True


@pytest.fixture
def listening(tmp_path):
    """A Harness listener (real pipeline and store) with `table` limits, on 127.0.0.1:0."""
    made = []

    def make(table: TableLimits, reads_held=None):
        h = Harness(tmp_path, ConnLimits(), table, reads_held)
        sock = bind_tcp("127.0.0.1", 0)
        made.append((h, sock))
        return h, sock

    yield make
    for h, sock in made:
        h.store.close()
        sock.close()


async def test_beyond_its_share_a_connection_is_reset_at_once_and_costs_no_tls(listening):
    """Five connections from 127.0.0.2 with a share of two: the three over it are reset before
    anything else happens; the two admitted, silent ones hold no TLS object yet."""
    h, sock = listening(TableLimits(per_ip=2, trusted=frozenset()))
    addr = sock.getsockname()[:2]
    clients = [await tcp_from("127.0.0.2", addr) for _ in range(5)]  # queued by the kernel
    async with trio.open_nursery() as n:
        await n.start(h.listener.run, sock)
        for c in clients[2:]:  # (accepted in connect order)
            assert await closed_by_peer(c)
        info = h.listener.info()
        assert (info["accepted"], info["refused"], info["refused_share"]) == (2, 3, 3)
        assert h.listener.active == 2 and info["handshaking"] == 2
        assert server_tls_streams() == 0  # silence so far: sockets and tasks only
        n.cancel_scope.cancel()
    for c in clients:
        await c.aclose()


async def test_a_connection_shed_by_a_newcomer_of_the_same_batch_is_closed(listening):
    """Two connections queued before the node looks: the second needs the only slot, the
    first (still in its handshake) goes - even though its task had not started yet."""
    h, sock = listening(TableLimits(max_total=1, trusted=frozenset({"127.0.0.1"})))
    addr = sock.getsockname()[:2]
    first = await tcp_from("127.0.0.1", addr)
    second = await tcp_from("127.0.0.1", addr)
    async with trio.open_nursery() as n:
        await n.start(h.listener.run, sock)
        assert await closed_by_peer(first)
        assert h.listener.active == 1 and len(h.listener.table) == 1
        assert h.listener.counters["shed"] == 1
        n.cancel_scope.cancel()
    await first.aclose()
    await second.aclose()


async def test_a_closed_tls_connection_leaves_nothing_for_the_garbage_collector(listening):
    """Twenty clients each finish TLS, ask `info` and leave. With Python's cyclic collector
    off (and the backstop collection not reached), none of their server-side TLS streams is
    left behind: each was freed as it closed, not at the collector's next pass."""
    h, sock = listening(TableLimits(trusted=frozenset({"127.0.0.1"})))
    addr = sock.getsockname()[:2]
    gc.collect()
    gc.disable()
    try:
        async with trio.open_nursery() as n:
            await n.start(h.listener.run, sock)
            for _ in range(20):
                tls = trio.SSLStream(await tcp_from("127.0.0.1", addr), client_ssl_context())
                async with open_link(tls) as link:
                    assert (await link.request("info", {}))["node_id"]
            h.listener.drain()
            with trio.fail_after(GUARD_S):
                await h.listener.drained.wait()
        assert h.listener.counters["accepted"] == 20 and h.listener.active == 0
        assert h.listener.reclaimer.counters["collections"] == 0
        assert server_tls_streams() == 0
    finally:
        gc.enable()


def test_the_reclaimer_collects_after_every_n_ended_streams():
    r = Reclaimer(every=3)
    for _ in range(7):
        r.ended()
    assert r.counters["collections"] == 2


async def test_a_peer_vanishing_mid_frame_is_not_a_node_error(tmp_path, autojump_clock):
    """A header announcing 60,000 bytes, ten of them, then the peer closes: the node answers
    what it can and closes, and logs no `connection_failed` (an error the node's operator
    would chase; a stranger could otherwise write error lines at will)."""
    h = Harness(tmp_path, ConnLimits(), TableLimits(trusted=frozenset()))
    try:
        async with trio.open_nursery() as n:
            client = await serve(h, n)
            await client.send_all((60_000).to_bytes(4, "big") + b"x" * 10)
            await client.aclose()
            with trio.fail_after(60):
                while h.listener.active:
                    await trio.sleep(1)
        assert h.listener.counters["bad_frames"] == 1
        assert not [line for line in h.log_lines if "connection_failed" in line]
    finally:
        h.store.close()


def test_accept_ready_takes_what_is_queued_and_no_more():
    sock = bind_tcp("127.0.0.1", 0)
    clients = [socket.create_connection(sock.getsockname()[:2]) for _ in range(3)]
    try:
        got, short = accept_ready(sock, 2)
        assert len(got) == 2 and short is None
        assert got[0][1] == "127.0.0.1" and got[0][2] == clients[0].getsockname()[1]
        more, _ = accept_ready(sock, 10)
        assert len(more) == 1
        assert accept_ready(sock, 10) == ([], None)  # nothing queued: no wait, no error
        for tcp, _, _ in got + more:
            tcp.close()
    finally:
        sock.close()
        for c in clients:
            c.close()


@pytest.mark.parametrize("shaped", [False, True], ids=["fixed-deadline", "handshake-clock"])
async def test_a_failed_handshake_is_counted_not_logged_as_a_node_error(listening, shaped):
    """Bytes that are not TLS, and a peer that leaves mid-handshake: each is a failed handshake
    in the counters and no `connection_failed` line (a stranger must not be able to write the
    operator's error log). With and without a shaper that may hold reads (the handshake then
    runs beside a clock task)."""
    h, sock = listening(TableLimits(trusted=frozenset({"127.0.0.1"})),
                        reads_held=(lambda raw: 0.0) if shaped else None)
    addr = sock.getsockname()[:2]
    async with trio.open_nursery() as n:
        await n.start(h.listener.run, sock)
        junk = await tcp_from("127.0.0.1", addr)
        await junk.send_all(b"GET / HTTP/1.0\r\n\r\n" * 4)
        assert await closed_by_peer(junk)
        half = await tcp_from("127.0.0.1", addr)
        await half.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        await half.aclose()
        with trio.fail_after(GUARD_S):
            while h.listener.counters["handshake_failed"] < 2:
                await trio.sleep(0.01)
        n.cancel_scope.cancel()
    assert h.listener.counters["handshake_failed"] == 2
    assert not [line for line in h.log_lines if "connection_failed" in line], h.log_lines
