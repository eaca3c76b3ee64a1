"""OnionRelay and RelayHub driven in-process: admission limits, final-hop rules, hop failures,
relayed-mode polling. Real keys, a real SQLite store, real sockets for the unreachable hop;
trio's autojump clock for the poll timeouts."""

import os
import socket

import cbor2
import pytest
import trio

from firmware.identity import Identity
from firmware.link import Dialer, LinkPool, direct_dial
from firmware.logs import Log
from firmware.net.onion_relay import OnionRelay
from firmware.net.relay_hub import RelayHub
from firmware.proto import onion
from firmware.proto.errors import BadRequest, Busy, StorageFull
from firmware.serve.pipeline import ConnInfo, Pipeline, RateLimiter
from firmware.serve.storage_ops import StorageOps
from firmware.store import MessageStore

NOW = 1_790_000_000_000


@pytest.fixture
def relay(tmp_path):
    ident = Identity.generate()
    store = MessageStore.open(str(tmp_path / "db.sqlite"), quota_bytes=1 << 20,
                              clock_ms=lambda: NOW)
    pipeline = Pipeline(storage=StorageOps(store, ident.node_id),
                        limiter=RateLimiter(1e6, 10**6))
    log = Log("warning", stream=open(os.devnull, "w"))
    r = OnionRelay(ident, LinkPool(direct_dial(Dialer()), connect_timeout=2.0), log=log,
                   execute=pipeline.storage_request, clock_ms=lambda: NOW, max_inflight=4,
                   max_per_link=2, forward_timeout=3.0)
    r.ident = ident
    yield r
    store.close()


def _frame(blob):
    return {"v": 2, "id": 9, "op": "onion", "args": {"blob": blob}}


def _onion(relay_or_hops, request):
    hops = relay_or_hops if isinstance(relay_or_hops, list) else [
        onion.Hop(relay_or_hops.ident.node_id, "127.0.0.1", 1)]
    return onion.build_onion(hops, cbor2.dumps(request), NOW, os.urandom)


INFO = {"v": 2, "id": 3, "op": "info", "args": {}}


async def test_final_hop_runs_the_request_and_seals_the_answer(relay):
    blob, keys = _onion(relay, INFO)
    ok = await relay.op_onion(_frame(blob), ConnInfo("10.0.0.1"), NOW)
    resp = onion.unwrap_response(keys, ok["blob"])
    assert resp["id"] == 3 and resp["ok"]["node_id"] == relay.ident.node_id
    assert relay.counters["final"] == 1 and relay.inflight == 0


@pytest.mark.parametrize("op", ["onion", "gossip", "relay_poll", "hello"])
async def test_final_layer_may_only_ask_for_storage_ops(relay, op):
    blob, keys = _onion(relay, {"v": 2, "id": 4, "op": op, "args": {}})
    resp = onion.unwrap_response(keys, (await relay.op_onion(_frame(blob), ConnInfo("h"), NOW))["blob"])
    assert resp["err"]["code"] == "unknown_op" and "cannot be sent through an onion" in resp["err"]["msg"]


async def test_admission_says_busy_before_any_crypto(relay):
    """The pipeline's admit stage runs before the op: a hot node spends nothing on a layer."""
    hot = [None]

    def too_hot(frame, conn, now):
        if hot[0]:
            raise Busy(f"not taking new work right now ({hot[0]})")

    pipeline = Pipeline(storage=None, limiter=RateLimiter(1e6, 10**6),
                        node_ops={"onion": relay.op_onion}, admit={"onion": [too_hot]})
    blob, _ = _onion(relay, INFO)
    hot[0] = "too hot (82 C)"
    r = await pipeline.respond(_frame(b"garbage"), ConnInfo("h"), NOW)
    assert r["err"]["code"] == "busy" and "too hot" in r["err"]["msg"]
    assert relay.counters["peeled"] == 0 and relay.counters["rejected"] == 0
    hot[0] = None
    assert "ok" in await pipeline.respond(_frame(blob), ConnInfo("h"), NOW)
    assert relay.counters["peeled"] == 1


async def test_per_link_and_global_inflight_limits(relay):
    conn = ConnInfo("h")
    conn.state["onion_inflight"] = 2
    with pytest.raises(Busy, match="on this link"):
        await relay.op_onion(_frame(b"x"), conn, NOW)
    relay.inflight = 4
    with pytest.raises(Busy, match="too many onions"):
        await relay.op_onion(_frame(b"x"), ConnInfo("other"), NOW)


async def test_bad_layers_and_bad_args(relay):
    other = Identity.generate()
    blob, _ = onion.build_onion([onion.Hop(other.node_id, "h", 1)], cbor2.dumps(INFO), NOW,
                                os.urandom)
    with pytest.raises(onion.OnionRejected):
        await relay.op_onion(_frame(blob), ConnInfo("h"), NOW)
    with pytest.raises(BadRequest, match="blob"):
        await relay.op_onion({"v": 2, "id": 1, "op": "onion", "args": {"blob": "text"}},
                             ConnInfo("h"), NOW)
    with pytest.raises(BadRequest, match="exactly blob"):  # v2: no position on the wire
        await relay.op_onion({"v": 2, "id": 1, "op": "onion", "args": {"blob": b"", "pos": 0}},
                             ConnInfo("h"), NOW)
    assert relay.counters["rejected"] == 1 and relay.inflight == 0


async def test_unreachable_next_hop_is_reported_inside_the_layer(relay):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    nxt = Identity.generate()
    hops = [onion.Hop(relay.ident.node_id, "127.0.0.1", 1), onion.Hop(nxt.node_id, "127.0.0.1", dead)]
    blob, keys = onion.build_onion(hops, cbor2.dumps(INFO), NOW, os.urandom)
    async with trio.open_nursery() as n:
        await n.start(relay.pool.run)
        ok = await relay.op_onion(_frame(blob), ConnInfo("h"), NOW)
        n.cancel_scope.cancel()
    with pytest.raises(onion.HopFailed) as e:
        onion.unwrap_response(keys, ok["blob"])
    assert e.value.index == 0 and e.value.next_code == "unreachable"
    assert relay.counters["next_hop_failed"] == 1


# -- relayed mode: the hub on the reachable side ------------------------------------------------


def _node_conn(peer_id):
    return ConnInfo("192.0.2.7", peer_id=peer_id)


async def test_poll_without_work_returns_empty_after_the_wait(autojump_clock):
    hub = RelayHub(poll_wait=20.0)
    t0 = trio.current_time()
    assert await hub.op_poll({"args": {}}, _node_conn(b"r" * 32), NOW) == {"jobs": []}
    assert trio.current_time() - t0 == pytest.approx(20.0)
    with pytest.raises(BadRequest, match="for nodes only"):
        await hub.op_poll({"args": {}}, ConnInfo("192.0.2.7"), NOW)


async def test_forward_goes_down_the_poll_and_comes_back_with_the_reply(autojump_clock):
    hub = RelayHub(poll_wait=20.0, timeout=15.0)
    r = b"r" * 32
    results = {}

    async def relayed_node():
        got = await hub.op_poll({"args": {}}, _node_conn(r), NOW)
        job = got["jobs"][0]
        assert job["frame"]["op"] == "info"
        await hub.op_reply({"args": {"token": job["token"], "response": {
            "v": 2, "id": job["token"], "ok": {"hello": "from R"}}}}, _node_conn(r), NOW)
        got = await hub.op_poll({"args": {}}, _node_conn(r), NOW)
        job = got["jobs"][0]
        await hub.op_reply({"args": {"token": job["token"], "response": {
            "v": 2, "id": job["token"], "err": {"code": "full", "msg": "no room"}}}},
            _node_conn(r), NOW)

    async with trio.open_nursery() as n:
        n.start_soon(relayed_node)
        await trio.sleep(1)
        assert hub.attached() == [r]
        results["ok"] = await hub.op_forward({"args": {"to": r, "op": "info", "args": {}}},
                                             ConnInfo("x"), NOW)
        with pytest.raises(StorageFull, match="no room"):
            await hub.lookup(r).request("store", {})
    assert results["ok"] == {"hello": "from R"}
    assert hub.counters["passed_down"] == 2 and hub.counters["answered"] == 2


async def test_forward_refusals(autojump_clock):
    hub = RelayHub(poll_wait=20.0, timeout=5.0)
    with pytest.raises(Busy, match="not attached"):
        await hub.op_forward({"args": {"to": b"z" * 32, "op": "info", "args": {}}}, ConnInfo("x"), NOW)
    with pytest.raises(BadRequest, match="relay_forward needs"):
        await hub.op_forward({"args": {"to": b"z" * 32, "op": "gossip", "args": {}}}, ConnInfo("x"), NOW)
    r = b"q" * 32

    async def silent_node():  # polls, takes the job, never answers
        await hub.op_poll({"args": {}}, _node_conn(r), NOW)

    async with trio.open_nursery() as n:
        n.start_soon(silent_node)
        await trio.sleep(1)
        with pytest.raises(ConnectionError, match="did not answer in time"):
            await hub.lookup(r).request("info", {})
    assert hub.counters["expired"] == 1


async def test_hub_forgets_peers_that_stopped_polling(autojump_clock):
    hub = RelayHub(max_attached=2, poll_wait=20.0)
    for name in (b"a", b"b"):
        await hub.op_poll({"args": {}}, _node_conn(name * 32), NOW)
    with pytest.raises(Busy, match="enough peers"):  # both still count as attached right after
        await hub.op_poll({"args": {}}, _node_conn(b"c" * 32), NOW)
    await trio.sleep(41)  # two poll waits without a poll: a and b are gone
    assert hub.attached() == []
    assert await hub.op_poll({"args": {}}, _node_conn(b"c" * 32), NOW) == {"jobs": []}
    assert hub.attached() == [b"c" * 32]


async def test_hub_attaches_a_relayed_node_only_from_the_network_its_record_names(autojump_clock):
    """A relayed node counts in the network its record names: the relay holds it to the one it
    really connects from (else any node could borrow an honest network through an honest relay).
    The poll carries the node's current record, merged before the check."""
    from firmware.proto.records import FLAG_RELAYED, make_record, verify_record

    held, merged = {}, []
    relayed = Identity.generate()
    relay_id = b"R" * 32

    def record(host, seq):
        return make_record(relayed.signing_key, seq=seq, addrs=[host], port=1, version="t",
                           flags=FLAG_RELAYED, relays=[relay_id], issued=NOW,
                           expires=NOW + 60_000)  # fmt: skip

    def on_record(peer, wire):
        merged.append(peer)
        held[peer] = verify_record(wire, NOW)

    hub = RelayHub(poll_wait=1.0, record_of=held.get, on_record=on_record)
    conn = ConnInfo("198.51.100.23", peer_id=relayed.node_id)  # where it really connects from
    with pytest.raises(BadRequest, match="holds no valid record of yours"):
        await hub.op_poll({"args": {}}, conn, NOW)
    with pytest.raises(BadRequest, match="names 203.0.113.9 but you connect from 198.51.100.23"):
        await hub.op_poll({"args": {"record": record("203.0.113.9", 1).wire}}, conn, NOW)
    assert hub.attached() == [] and hub.counters["refused_address"] == 2
    # the same /24 (its NAT may use a neighbouring address): attached
    assert await hub.op_poll({"args": {"record": record("198.51.100.1", 2).wire}}, conn,
                             NOW) == {"jobs": []}  # fmt: skip
    assert hub.attached() == [relayed.node_id] and merged == [relayed.node_id] * 2
    # an IPv4-mapped source address is the same network
    mapped = ConnInfo("::ffff:198.51.100.23", peer_id=relayed.node_id)
    assert await hub.op_poll({"args": {}}, mapped, NOW) == {"jobs": []}
