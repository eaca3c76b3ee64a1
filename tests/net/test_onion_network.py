"""Onions through real node processes on 127.0.0.1: 12 nodes, paths, privacy, bad input.

The nodes run membership (all bootstrap from the first one). Most tests hand the client the 12
nodes' (id, address) directly - an onion layer carries its next hop's address, so relays need
no membership; the CLI test bootstraps the client from a node's live records instead.
"""

import os
import random
import socket
import ssl
import time

import cbor2
import nacl.signing
import pytest
import trio

from firmware.client import connect, open_sealed, seal_for, wall_ms
from firmware.client.onion_client import NoPath, OnionClient, open_onion_client
from firmware.proto import onion
from firmware.proto.errors import OnionRejected, ProtocolError
from firmware.proto.hashing import sign_request
from firmware.proto.placement import rank
from tests.conftest import NodeProcess, run_cli

pytestmark = pytest.mark.slow  # twelve daemons, ~1.5 min

N = 12
FAST = {"limits": {"rate_per_sec": 100_000.0, "rate_burst": 100_000}}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    base = tmp_path_factory.mktemp("onion12")
    nodes = []
    try:
        for i in range(N):
            boot = [f"127.0.0.1:{nodes[0].port}@{nodes[0].node_id.hex()}"] if nodes else []
            cfg = {**FAST, "network": {"bootstrap": boot, "gossip_interval": 0.3,
                                       "test_interval": 1.0, "test_backoff_max": 2.0}}
            n = NodeProcess(base, cfg, name=f"n{i:02d}")
            nodes.append(n)
            n.start()
        # every node sees the same live set, so client and nodes agree on the swarms
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _min_live(nodes) < N - 1:
            time.sleep(0.5)
        assert _min_live(nodes) == N - 1, "membership did not converge"
        yield nodes
    finally:
        for n in nodes:
            n.kill()


async def _infos(nodes):
    """`info` of every node, fetched concurrently over pinned links (None if it fails)."""
    out = [None] * len(nodes)

    async def one(i, n):
        try:
            async with connect(n.host, n.port, n.node_id, timeout=5) as c:
                out[i] = await c.info()
        except (ConnectionError, OSError, ProtocolError):
            pass

    async with trio.open_nursery() as nursery:
        for i, n in enumerate(nodes):
            nursery.start_soon(one, i, n)
    return out


def _min_live(nodes):
    return min((i or {}).get("peers_live", -1) for i in trio.run(_infos, nodes))


def hops(nodes):
    return [onion.Hop(n.node_id, n.host, n.port) for n in nodes]


def by_id(nodes):
    return {n.node_id: n for n in nodes}


def _files_contain(node, needles):
    """Which needles occur in any file of the node's data dir or logs (raw and hex)."""
    found = set()
    for root, _, files in os.walk(node.dir):
        for f in files:
            try:
                with open(os.path.join(root, f), "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            for needle in needles:
                if needle in data:
                    found.add(needle)
    return found


async def test_message_via_onion_fetched_by_recipient_via_another_path(net):
    recipient = nacl.signing.SigningKey.generate()
    rpub = bytes(recipient.verify_key)
    text = b"meet at the usual place " + os.urandom(8).hex().encode()
    swarm = set(rank([n.node_id for n in net], rpub, 5))
    async with open_onion_client(hops(net), rng=random.Random(1)) as sender:
        r = await sender.store(rpub, seal_for(rpub, text), ttl_ms=3_600_000)
        send_path = [h.node_id for h in sender.last_path]
    assert len(set(send_path)) == 3 and send_path[-1] in swarm
    assert r.replicas == 5  # the final hop copied it to the whole swarm before answering

    # the recipient uses another client whose first path differs at every hop
    for seed in range(2, 200):
        preview = [h.node_id for h in OnionClient(hops(net), None, rng=random.Random(seed))
                   .choose_path(rpub)]
        if not set(preview) & set(send_path):
            break
    async with open_onion_client(hops(net), rng=random.Random(seed)) as me:
        msgs = await me.retrieve_all(recipient)
        fetch_path = [h.node_id for h in me.last_path]
    assert fetch_path == preview and not set(fetch_path) & set(send_path)
    assert [m.hash for m in msgs] == [r.hash]
    assert open_sealed(recipient, msgs[0].data) == text

    # the middle hops (outside the swarm) never held the recipient key, in store or logs
    needles = {rpub, rpub.hex().encode()}
    nodes = by_id(net)
    middles = set(send_path[:-1]) | set(fetch_path[:-1])
    assert len(middles) == 4 and not middles & swarm
    for nid in middles:
        assert _files_contain(nodes[nid], needles) == set(), f"middle hop {nid.hex()[:8]} leaked"
    for nid in (send_path[-1], fetch_path[-1]):  # the check can see it where it is
        assert rpub in _files_contain(nodes[nid], {rpub})

    # the relays forwarded and executed what we think they did
    async with connect(net[0].host, net[0].port, net[0].node_id) as c:
        info = await c.info()
    assert set(info["onion"]) >= {"peeled", "forwarded", "final", "rejected"}


async def test_delete_through_onion(net):
    me = nacl.signing.SigningKey.generate()
    mpub = bytes(me.verify_key)
    async with open_onion_client(hops(net), final_choices=1) as oc:
        r1 = await oc.store(mpub, b"one")
        r2 = await oc.store(mpub, b"two")
        assert list(await oc.delete(me, [r1.hash])) == [r1.hash]
        left = await oc.retrieve_all(me)
    assert [m.hash for m in left] == [r2.hash]


async def test_retry_routes_around_a_dead_hop(net, tmp_path):
    ghost_key = nacl.signing.SigningKey.generate()
    # a node that is listed but does not exist (nothing listens on its port)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    ghost = onion.Hop(bytes(ghost_key.verify_key), "127.0.0.1", dead_port)
    rng = random.Random(5)
    async with open_onion_client(hops(net[:4]) + [ghost], attempts=8, rng=rng) as oc:
        # force the ghost into the first path by penalising nobody and sampling until it is in
        for _ in range(20):
            info = await oc.info()
            assert info["version"]
            if oc.counters["retries"]:
                break
        assert oc.counters["retries"] >= 1
        assert oc._penalised.get(ghost.node_id, 0) > 0


async def test_not_enough_nodes_is_a_clear_error(net):
    async with open_onion_client(hops(net[:2])) as oc:
        with pytest.raises(NoPath, match="needs 3 distinct nodes, only 2"):
            await oc.info()


# -- bad input against real nodes ---------------------------------------------------------------


async def _raw_onion(node, blob):
    """Send one onion op to ``node``; return its ok map, or raise the node's error."""
    result = None
    async with connect(node.host, node.port, node.node_id) as c:
        try:
            result = await c.request("onion", {"blob": blob})
        except ProtocolError as e:  # raised outside connect's nursery, so not in a group
            result = e
    if isinstance(result, Exception):
        raise result
    return result


def _info_frame():
    return cbor2.dumps({"v": 2, "id": 7, "op": "info", "args": {}})


async def test_bad_layers_get_the_uniform_error_and_node_stays_healthy(net):
    a, b, c = net[:3]
    good, keys = onion.build_onion(hops([a, b]), _info_frame(), wall_ms(), os.urandom)
    cases = {
        "wrong key": onion.build_onion(hops([b]), _info_frame(), wall_ms(), os.urandom)[0],
        "truncated": good[:-5],
        "header only": good[:50],
        "stale": onion.build_onion(hops([a]), _info_frame(), wall_ms() - 120_000, os.urandom)[0],
        "tampered": good[:2000] + bytes([good[2000] ^ 1]) + good[2001:],
    }
    messages = set()
    for what, blob in cases.items():
        with pytest.raises(OnionRejected) as e:  # one code, one message for every reason
            await _raw_onion(a, blob)
        assert e.value.code == "onion_rejected", what
        messages.add(e.value.msg)
    assert messages == {OnionRejected().msg}

    # the good one works once, and its replay is refused the same way
    ok = await _raw_onion(a, good)
    assert onion.unwrap_response(keys, ok["blob"])["ok"]["node_id"] == b.node_id
    with pytest.raises(OnionRejected):
        await _raw_onion(a, good)

    async with connect(a.host, a.port, a.node_id) as cl:
        info = await cl.info()
    assert info["state"] == "serving" and info["onion"]["rejected"] >= 6
    assert a.alive


async def test_longest_path_works_and_a_longer_one_cannot_be_built(net):
    """v2 packets have room for MAX_HOPS slots and no hop is told its position: a 5-hop onion
    over real nodes answers; a 6th hop cannot be encoded at all."""
    path = hops(net[:onion.MAX_HOPS])
    blob, keys = onion.build_onion(path, _info_frame(), wall_ms(), os.urandom)
    assert len(blob) == onion.SIZE_CLASSES[0]
    ok = await _raw_onion(net[0], blob)
    assert len(ok["blob"]) == keys[0].response_size
    assert onion.unwrap_response(keys, ok["blob"])["ok"]["node_id"] == path[-1].node_id
    with pytest.raises(ValueError, match="1..5 hops"):
        onion.build_onion(hops(net[: onion.MAX_HOPS + 1]), _info_frame(), wall_ms(), os.urandom)


async def test_peer_stalling_mid_frame_does_not_hurt_the_node(net):
    a = net[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    stallers = []
    for _ in range(5):
        tcp = await trio.open_tcp_stream(a.host, a.port)
        s = trio.SSLStream(tcp, ctx)
        await s.do_handshake()
        await s.send_all(b"\x00\x00\x10\x00" + b"\xa4" + b"partial")  # 4 KiB announced, 8 sent
        stallers.append(s)
    async with open_onion_client(hops(net[3:8]), final_choices=1) as oc:
        with trio.fail_after(10):
            for _ in range(3):
                assert (await oc.info())["state"] == "serving"
    for s in stallers:
        await trio.aclose_forcefully(s)
    assert a.alive


async def test_next_hop_that_stalls_is_reported_not_waited_on_forever(net):
    """A TLS server with the right identity that reads and never answers: hop 0 times out."""
    from firmware.identity import Identity
    from firmware.link import server_ssl_context

    ident = Identity.generate()
    ctx = server_ssl_context(ident)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def stall(tcp):
        s = trio.SSLStream(tcp, ctx, server_side=True)
        try:
            await s.do_handshake()
            while await s.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, stall, listeners)
        a = net[8]
        staller = onion.Hop(ident.node_id, "127.0.0.1", port)
        blob, keys = onion.build_onion([onion.Hop(a.node_id, a.host, a.port), staller],
                                       _info_frame(), wall_ms(), os.urandom)
        t0 = trio.current_time()
        ok = await _raw_onion(a, blob)
        waited = trio.current_time() - t0
        with pytest.raises(onion.HopFailed) as e:
            onion.unwrap_response(keys, ok["blob"])
        assert e.value.index == 0 and e.value.next_code == "timeout"
        assert 5 <= waited <= 15
        nursery.cancel_scope.cancel()




async def test_cli_send_and_fetch_go_through_onions(net):
    before = sum(i["onion"]["peeled"] for i in await _infos(net))
    key = net[1].dir / "me.key"
    assert run_cli("keygen", "--out", str(key)).returncode == 0
    me = run_cli("id", "--key", str(key)).stdout.decode().strip()
    sent = net[0].cli("send", "--to", me, "hello through three hops")
    assert sent.returncode == 0, sent.stderr.decode()
    assert b"directly" not in sent.stderr
    got = net[1].cli("fetch", "--key", str(key))
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout.decode().splitlines() == ["hello through three hops"]
    after = sum(i["onion"]["peeled"] for i in await _infos(net))
    assert after - before >= 6  # 3 layers for the send, 3 (or more on retries) for the fetch
    direct = net[1].cli("fetch", "--key", str(key), "--direct")
    assert direct.returncode == 0


async def test_final_hop_outside_the_swarm_asks_the_swarm(net):
    me = nacl.signing.SigningKey.generate()
    rpub = bytes(me.verify_key)
    swarm = rank([n.node_id for n in net], rpub, 5)
    outsiders = [n for n in net if n.node_id not in swarm]
    async with open_onion_client(hops(net), final_choices=1) as oc:
        r = await oc.store(rpub, b"kept by the swarm")
        assert r.replicas == 5
        path = hops(outsiders[:3])  # every hop, the final one included, outside the swarm
        sig = oc._sig(me, "retrieve", rpub, 0)
        resp = await oc._once(path, "retrieve", {"recipient": rpub, "ns": 0, "after": None,
                                                 "max_count": 10, "max_bytes": 100_000, **sig})
    assert [m["hash"] for m in resp["ok"]["messages"]] == [r.hash]
    final = outsiders[2]
    assert not _files_contain(final, {rpub}), "the outsider only passed the request on"
    (info,) = await _infos([final])
    assert info["onion"]["forwarded_to_swarm"] >= 1


async def test_a_multi_page_mailbox_comes_back_exactly_once_over_onions(net):
    """Issue: each page went to a random swarm member, but `after` is a position in one
    member's insertion order. 320 messages stored concurrently through different members (so
    their insertion orders differ), fetched in 100-message pages over onions: every message
    once, whichever member answers."""
    me = nacl.signing.SigningKey.generate()
    mpub = bytes(me.verify_key)
    swarm = rank([n.node_id for n in net], mpub, 5)
    members = [by_id(net)[nid] for nid in swarm]
    stored = set()

    async def store_via(member, start):
        async with connect(member.host, member.port, member.node_id) as c:
            for i in range(start, 320, len(members)):
                r = await c.store(mpub, b"m%03d" % i, ts=wall_ms() - i)
                assert r.replicas == 5
                stored.add(r.hash)

    async with trio.open_nursery() as n:
        for k, member in enumerate(members):
            n.start_soon(store_via, member, k)
    assert len(stored) == 320
    for seed in range(3):
        async with open_onion_client(hops(net), rng=random.Random(seed)) as oc:
            got = await oc.retrieve_all(me)
        hashes = [m.hash for m in got]
        assert len(hashes) == 320 and set(hashes) == stored, (seed, len(hashes),
                                                              len(set(hashes)))


async def test_every_hop_sees_only_the_size_class_of_a_layer(net):
    """Four onions through the same three real nodes: a small and a full-size store, a first
    retrieve page and a full page. Each hop's counters (sizes of the layers it took and the
    answers it gave) move by exactly one at the class size - the same at first, middle and
    final hop - and by nothing else: no hop sees a length beyond the class."""
    path_nodes = net[1:4]
    path = hops(path_nodes)
    me = nacl.signing.SigningKey.generate()
    rcpt = bytes(me.verify_key)

    def sizes(infos):
        return [(i["onion"]["sizes_in"], i["onion"]["sizes_out"]) for i in infos]

    async def send(args, op):
        frame = {"v": 2, "id": 1, "op": op, "args": args}
        blob, keys = onion.build_onion(path, cbor2.dumps(frame), wall_ms(), os.urandom)
        first = path_nodes[0]
        async with connect(first.host, first.port, first.node_id, timeout=10) as c:
            ok = await c.request("onion", {"blob": blob})
        assert "ok" in onion.unwrap_response(keys, ok["blob"])
        return len(blob), len(ok["blob"])

    def retrieve(max_bytes):
        ts = wall_ms()
        return {"recipient": rcpt, "ns": 0, "after": None, "max_count": 100,
                "max_bytes": max_bytes, "sig_ts": ts,
                "sig": sign_request(me, "retrieve", rcpt, 0, ts)}  # fmt: skip

    cases = [
        ({"recipient": rcpt, "ns": 0, "ts": wall_ms(), "ttl": 600_000, "data": b"s" * 100},
         "store", 4_096, 4_096),
        ({"recipient": rcpt, "ns": 0, "ts": wall_ms(), "ttl": 600_000, "data": b"b" * 76_800},
         "store", 81_920, 4_096),
        (retrieve(60_000), "retrieve", 4_096, 81_920),
        (retrieve(900_000), "retrieve", 4_096, 1_044_480),
    ]  # fmt: skip
    for args, op, size_in, size_out in cases:
        before = sizes(await _infos(path_nodes))
        assert await send(args, op) == (size_in, size_out)
        after = sizes(await _infos(path_nodes))
        for (in0, out0), (in1, out1) in zip(before, after, strict=True):
            grew_in = {k: in1[k] - in0.get(k, 0) for k in in1 if in1[k] != in0.get(k, 0)}
            grew_out = {k: out1[k] - out0.get(k, 0) for k in out1 if out1[k] != out0.get(k, 0)}
            assert (grew_in, grew_out) == ({str(size_in): 1}, {str(size_out): 1}), op
    for i in await _infos(net):  # nothing but class sizes ever passed any node
        assert set(i["onion"]["sizes_in"]) | set(i["onion"]["sizes_out"]) <= {
            str(s) for s in onion.SIZE_CLASSES}


async def test_a_fetch_starts_in_the_small_class_and_moves_up_for_a_big_message(net):
    """An empty or small mailbox is fetched in one 4 KiB-class onion; a message too big for it
    is answered too_large inside the class, and the client asks again one class up."""
    me = nacl.signing.SigningKey.generate()
    mpub = bytes(me.verify_key)
    async with open_onion_client(hops(net), final_choices=1) as oc:
        big = await oc.store(mpub, b"y" * 70_000)
        before = oc.counters["requests"]
        assert [m.hash for m in await oc.retrieve_all(me)] == [big.hash]
        assert oc.counters["requests"] - before == 2  # 4 KiB: too_large; 80 KiB: the message
        small = await oc.store(mpub, b"x" * 100)
        before = oc.counters["requests"]
        got = await oc.retrieve_all(me, after=big.hash)
        assert [m.hash for m in got] == [small.hash] and oc.counters["requests"] - before == 1
