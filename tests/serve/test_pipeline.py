"""The request pipeline in-process: real SQLite store, no sockets; trio's MockClock where time is the subject."""

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.identity import Identity
from firmware.logs import Log
from firmware.proto.errors import ERROR_CODES
from firmware.proto.hashing import message_hash, sign_request
from firmware.serve.pipeline import ConnInfo, Pipeline, RateLimiter
from firmware.serve.storage_ops import StorageOps
from firmware.store import MessageStore

T0 = 1_800_000_000_000  # ms since the epoch at MockClock time 0
DAY = 86_400_000
NODE = Identity(b"\x01" * 32)
ALICE = Identity(b"\x02" * 32)
MALLORY = Identity(b"\x03" * 32)
HOME = ConnInfo("192.0.2.10")


def now_ms():
    return T0 + int(trio.current_time() * 1000)


class LogSink:
    def __init__(self):
        self.lines = []

    def write(self, s):
        self.lines.append(s)

    def flush(self):
        pass


def make_pipeline(store, *, rate=10, burst=20, log=None, info_sources=(), **kw):
    return Pipeline(storage=StorageOps(store, NODE.node_id, info_sources=info_sources),
                    limiter=RateLimiter(rate, burst), log=log, **kw)


@pytest.fixture
async def store(tmp_path):
    store = MessageStore.open(tmp_path / "m.sqlite3", quota_bytes=200_000, clock_ms=now_ms,
                              batch_rows=8, batch_ms=5, sweep_every_s=1)
    async with trio.open_nursery() as n:
        await n.start(store.run)
        yield store
        n.cancel_scope.cancel()
    store.close()


@pytest.fixture
def sink():
    return LogSink()


@pytest.fixture
def rpc(store, sink):
    return make_pipeline(store, log=Log("debug", stream=sink, journald=True))


def request(rid, op, **args):
    return {"v": 2, "id": rid, "op": op, "args": args}


def signed(op, ns=0, key=ALICE, sig_ts=None, msg_hash=None, **args):
    sig_ts = now_ms() if sig_ts is None else sig_ts
    bound = {k: args[k] for k in ("hashes", "expiry") if k in args}  # v2: sig covers them
    if op == "store":
        bound["msg_hash"] = msg_hash
    return dict(recipient=ALICE.node_id, ns=ns, sig_ts=sig_ts,
                sig=sign_request(key.signing_key, op, ALICE.node_id, ns, sig_ts, **bound), **args)


async def call(rpc, op, conn=HOME, rid=7, at=None, **args):
    resp = await rpc.respond(request(rid, op, **args), conn, now_ms() if at is None else at)
    assert resp["v"] == 2 and resp["id"] == rid
    return resp


async def ok(rpc, op, **args):
    resp = await call(rpc, op, **args)
    assert "ok" in resp, resp
    return resp["ok"]


async def err(rpc, op, **args):
    resp = await call(rpc, op, **args)
    assert "err" in resp, resp
    return resp["err"]["code"], resp["err"]["msg"]


async def test_store_retrieve_delete_expire(rpc):
    ts = now_ms()
    hashes = []
    for i in range(3):
        r = await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=ts + i, ttl=DAY,
                     data=b"m%d" % i)
        assert r == {"hash": message_hash(ALICE.node_id, 0, ts + i, b"m%d" % i), "new": True,
                     "expiry": ts + i + DAY}
        hashes.append(r["hash"])
    again = await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=ts, ttl=DAY, data=b"m0")
    assert again["new"] is False and again["hash"] == hashes[0]

    r = await ok(rpc, "retrieve", **signed("retrieve", max_count=2, after=None))
    assert [m["data"] for m in r["messages"]] == [b"m0", b"m1"] and r["more"] is True
    r = await ok(rpc, "retrieve", **signed("retrieve", after=hashes[1]))
    assert [m["data"] for m in r["messages"]] == [b"m2"] and r["more"] is False

    r = await ok(rpc, "delete", **signed("delete", hashes=[hashes[1], b"\x00" * 32]))
    assert r == {"deleted": [hashes[1]]}

    new_exp = now_ms() + 3600_000
    r = await ok(rpc, "expire", **signed("expire", hashes=hashes, expiry=new_exp))
    assert sorted(r["updated"]) == sorted([hashes[0], hashes[2]])
    r = await ok(rpc, "retrieve", **signed("retrieve"))
    assert [(m["data"], m["expiry"]) for m in r["messages"]] == [(b"m0", new_exp),
                                                                 (b"m2", new_exp)]
    # beyond now + 14 days (ns 0): no message could take it, an error (docs/protocol.md)
    code, msg = await err(rpc, "expire", **signed("expire", hashes=hashes, expiry=ts + 15 * DAY))
    assert code == "ttl_out_of_range" and msg.startswith("expiry")
    code, msg = await err(rpc, "expire", **signed("expire", hashes=hashes, expiry=now_ms() - 1))
    assert code == "bad_request" and msg.startswith("expiry")


async def test_private_namespace_store_needs_the_recipients_signature(rpc):
    base = dict(recipient=ALICE.node_id, ns=3, ts=now_ms(), ttl=DAY, data=b"x")
    code, _ = await err(rpc, "store", **base)
    assert code == "bad_request"
    h = message_hash(ALICE.node_id, 3, base["ts"], b"x")
    forged = signed("store", ns=3, key=MALLORY, msg_hash=h)
    code, _ = await err(rpc, "store", **{**base, "sig_ts": forged["sig_ts"], "sig": forged["sig"]})
    assert code == "bad_signature"
    good = signed("store", ns=3, msg_hash=h)
    r = await ok(rpc, "store", **{**base, "sig_ts": good["sig_ts"], "sig": good["sig"]})
    assert r["new"]
    # and it is only visible in ns 3
    assert (await ok(rpc, "retrieve", **signed("retrieve", ns=0)))["messages"] == []
    assert len((await ok(rpc, "retrieve", **signed("retrieve", ns=3)))["messages"]) == 1


async def test_signature_window_is_60_seconds_each_way(rpc):
    t = now_ms()
    for skew in (-60_000, 60_000):
        await ok(rpc, "retrieve", at=t, **signed("retrieve", sig_ts=t + skew))
    for skew in (-60_001, 60_001):
        code, msg = await err(rpc, "retrieve", at=t, **signed("retrieve", sig_ts=t + skew))
        assert code == "stale_signature" and msg.startswith("sig_ts")


async def test_reading_someone_elses_mailbox_is_refused(rpc):
    await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms(), ttl=DAY, data=b"x")
    args = signed("retrieve", key=MALLORY)
    code, _ = await err(rpc, "retrieve", **args)
    assert code == "bad_signature"


async def test_rate_limit_per_client_ip(rpc):
    """Time is the argument here (the handler reads no clock), so the refill is exact."""
    other = ConnInfo("198.51.100.7")
    t = now_ms()

    async def info(conn, at):
        return await rpc.respond(request(1, "info"), conn, at)

    for _ in range(20):  # burst 20
        assert "ok" in await info(HOME, t)
    r = await info(HOME, t)
    assert r["err"]["code"] == "rate_limited"
    assert "192.0.2.10" in r["err"]["msg"] and "retry in 100 ms" in r["err"]["msg"]
    assert "ok" in await info(other, t)  # another client is not affected
    assert "err" in await info(HOME, t + 99)
    assert "ok" in await info(HOME, t + 250)  # 10/s: 2.5 tokens refilled, minus the one above
    assert "ok" in await info(HOME, t + 250)
    assert await info(HOME, t + 250) == {"v": 2, "id": 1, "err": {
        "code": "rate_limited",
        "msg": "too many requests from 192.0.2.10: at most 10/s sustained, bursts of 20; "
               "retry in 50 ms"}}
    assert rpc.counters["rate_limited"] == 3


async def test_quota_full_is_reported_as_full(rpc):
    for i in range(2):
        await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms() + i, ttl=DAY,
                 data=bytes([i]) * 76_800)
    code, msg = await err(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms() + 5, ttl=DAY,
                          data=b"z" * 76_800)
    assert code == "full" and "quota" in msg and "elsewhere" in msg


async def test_store_failure_is_internal_and_logged(rpc, store, sink):
    store._writer.close()  # the database connection dies under the node
    code, msg = await err(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms(), ttl=DAY,
                          data=b"x")
    assert code == "internal" and "log" in msg
    assert any("store_error" in line for line in sink.lines)


async def test_expired_messages_are_swept_on_time(tmp_path, mock_clock):
    """Manual MockClock (no autojump: the store's worker threads would let it race ahead).
    batch_rows=1 so a commit never waits on a batch deadline that manual time would not reach."""
    store = MessageStore.open(tmp_path / "m.sqlite3", quota_bytes=200_000, clock_ms=now_ms,
                              batch_rows=1, batch_ms=5, sweep_every_s=1)
    rpc = make_pipeline(store)
    async with trio.open_nursery() as n:
        await n.start(store.run)
        ts = now_ms()
        await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=ts, ttl=10_000, data=b"short")
        await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=ts, ttl=60_000, data=b"long")
        counts = {}
        for step in range(1, 141):  # 70 s in 0.5 s steps
            mock_clock.jump(0.5)
            await trio.testing.wait_all_tasks_blocked()  # a due sweep has queued its delete
            await store.flush()  # ... and it is committed once this returns
            counts[step * 500] = store.stats()["count"]
        n.cancel_scope.cancel()
    store.close()
    # Present until expiry (never swept early), gone within one sweep interval after it.
    assert all(c == 2 for t, c in counts.items() if t < 10_000)
    assert all(c == 1 for t, c in counts.items() if 11_500 <= t < 60_000)
    assert all(c == 0 for t, c in counts.items() if t >= 61_500)


async def test_expired_messages_are_invisible_before_the_sweep(rpc):
    t = now_ms()
    await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=t - 9_990, ttl=10_000, data=b"x")
    await trio.sleep(0.05)
    r = await ok(rpc, "retrieve", **signed("retrieve"))
    assert r["messages"] == []


async def test_info_and_extra_fields(store):
    rpc = make_pipeline(store, info_sources=[lambda: {"temp_c": 51.5}])
    await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms(), ttl=DAY, data=b"12345")
    at = now_ms()  # the request's time, given: real time may pass a millisecond in between
    info = await ok(rpc, "info", at=at)
    assert info["node_id"] == NODE.node_id and info["time"] == at
    assert info["state"] == "serving" and info["messages"] == 1 and info["bytes"] == 5
    assert info["temp_c"] == 51.5 and isinstance(info["version"], str)


async def test_info_fields_of_other_parts_are_reused_within_info_cache_ms(store):
    """Under load many `info`s arrive per millisecond: the info sources run once per
    info_cache_ms of request time; core fields (time, store totals) stay exact."""
    calls = []
    rpc = make_pipeline(store, rate=1e9, burst=10**9,
                        info_sources=[lambda: calls.append(1) or {"source_calls": len(calls)}])
    t = now_ms()
    first = await ok(rpc, "info", at=t)
    again = await ok(rpc, "info", at=t)
    assert first["source_calls"] == again["source_calls"] == 1 and len(calls) == 1
    assert again["time"] == first["time"] == t  # core fields are per request
    assert (await ok(rpc, "info", at=t + 1))["source_calls"] == 2  # 1 ms later: rebuilt
    assert (await ok(rpc, "info", at=t - 5))["source_calls"] == 3  # clock stepped back
    rpc.storage.info_cache_ms = 0  # off: every call asks every source
    await ok(rpc, "info", at=t - 5)
    await ok(rpc, "info", at=t - 5)
    assert len(calls) == 5


async def test_node_ops_and_bugs_cost_one_request(store, sink):
    async def hello(frame, conn, now):
        conn.peer_id = frame["args"]["me"]
        return {"hi": True}

    async def broken(frame, conn, now):
        raise ValueError("bug")

    rpc = make_pipeline(store, log=Log("debug", stream=sink, journald=True),
                        node_ops={"hello": hello, "broken": broken})
    conn = ConnInfo("192.0.2.99")
    assert (await call(rpc, "hello", conn=conn, me=b"n" * 32))["ok"] == {"hi": True}
    assert conn.peer_id == b"n" * 32
    resp = await call(rpc, "broken")
    assert resp["err"]["code"] == "internal"
    assert any("rpc_internal_error" in line and "bug" in line for line in sink.lines)
    with pytest.raises(ValueError, match="may not replace the storage RPC"):
        make_pipeline(store, node_ops={"store": hello})


async def test_unparseable_requests_keep_their_id_when_readable(rpc):
    resp = await rpc.respond({"v": 2, "id": 5, "op": "nope", "args": {}}, HOME, now_ms())
    assert resp["id"] == 5 and resp["err"]["code"] == "unknown_op"
    resp = await rpc.respond({"v": 2, "id": "x", "op": "info", "args": {}}, HOME, now_ms())
    assert resp["id"] is None and resp["err"]["code"] == "bad_request"


async def test_logs_never_carry_keys_or_data(rpc, sink):
    await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms(), ttl=DAY, data=b"SECRET")
    await err(rpc, "retrieve", **signed("retrieve", key=MALLORY))
    text = "".join(sink.lines)
    assert ALICE.node_id.hex() not in text and "SECRET" not in text


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_frames = st.fixed_dictionaries(
    {},
    optional={"v": st.sampled_from([1, 2, "1", None]), "id": st.integers(-5, 2**33) | _values,
              "op": st.sampled_from(["store", "retrieve", "delete", "expire", "info", "x"])
              | _values,
              "args": st.fixed_dictionaries({}, optional={
                  "recipient": st.just(ALICE.node_id) | _values, "ns": st.integers(-40000, 40000),
                  "ts": st.integers(-1, 2**64), "ttl": st.integers(-1, 2**40),
                  "data": st.binary(max_size=100), "hashes": st.lists(st.binary(min_size=32, max_size=32)),
                  "sig_ts": st.integers(), "sig": st.binary(min_size=64, max_size=64), "after": _values,
                  "expiry": st.integers(), "max_count": _values}) | _values,
              "extra": _values},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=_frames)
def test_any_decoded_frame_gets_a_well_formed_answer(tmp_path_factory, frame):
    """Whatever CBOR a peer sends, respond() returns one ok/err map and never raises."""
    path = tmp_path_factory.mktemp("h") / "m.sqlite3"

    async def main():
        store = MessageStore.open(path, quota_bytes=10**6, clock_ms=lambda: T0)
        rpc = make_pipeline(store, rate=1e9, burst=10**9)
        async with trio.open_nursery() as n:
            await n.start(store.run)
            resp = await rpc.respond(frame, HOME, T0)
            n.cancel_scope.cancel()
        store.close()
        return resp

    resp = trio.run(main)
    assert resp["v"] == 2 and set(resp) in ({"v", "id", "ok"}, {"v", "id", "err"})
    if "err" in resp:
        assert resp["err"]["code"] in ERROR_CODES - {"internal"}, resp
        assert resp["err"]["msg"]


# -- stage order: nothing travels before every admission check has passed --------------------


class Recorder:
    """A replication collaborator that records when the pipeline reached each stage."""

    def __init__(self, store):
        self.events = []
        self.store = store

    def start_store(self, req, conn, now_ms):
        self.events.append(("replicate", self.store.totals()["count"]))
        recorder = self

        class Copies:
            async def finish(self, result):
                recorder.events.append(("finish", result["new"]))
                return {"replicas": 3}

        return Copies()

    async def after_write(self, req, result, conn, now_ms):
        self.events.append((req.op + "_forwarded", tuple(result.get("deleted", ()))))


def refusals(store, recorder, why):
    from firmware.proto.errors import Busy, StorageFull, WriteBudgetSpent

    def too_hot(req, conn, now):
        if why == "heat":
            raise Busy("this node is not taking new work right now (too hot)")

    async def make_room(size):
        recorder.events.append(("make_room", size))
        if why == "quota":
            raise StorageFull("over quota")
        if why == "floor":
            raise StorageFull("below the free-space floor")
        if why == "budget":
            raise WriteBudgetSpent("daily write budget spent")

    return make_pipeline(store, admit={"store": [too_hot]}, make_room=make_room,
                         replication=recorder)


@pytest.mark.parametrize("why,code", [("heat", "busy"), ("quota", "full"), ("floor", "full"),
                                      ("budget", "write_budget")])
async def test_a_refused_store_is_never_replicated(store, why, code):
    recorder = Recorder(store)
    rpc = refusals(store, recorder, why)
    got, _ = await err(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms(), ttl=DAY,
                       data=b"x" * 10)
    assert got == code
    assert [e[0] for e in recorder.events] == ([] if why == "heat" else ["make_room"])
    assert store.totals()["count"] == 0


async def test_stages_run_in_order_for_an_admitted_store_and_a_delete(store):
    recorder = Recorder(store)
    rpc = refusals(store, recorder, None)
    r = await ok(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms(), ttl=DAY, data=b"xy")
    assert r["replicas"] == 3 and r["new"] is True
    # room made, copies started before the local write committed, finished after it
    assert recorder.events == [("make_room", 2), ("replicate", 0), ("finish", True)]
    recorder.events.clear()
    d = await ok(rpc, "delete", **signed("delete", hashes=[r["hash"]]))
    assert recorder.events == [("delete_forwarded", (r["hash"],))] and d["deleted"] == [r["hash"]]
    # a store with a bad time is refused at parse, before anything travels
    code, _ = await err(rpc, "store", recipient=ALICE.node_id, ns=0, ts=now_ms() + 10 * DAY,
                        ttl=DAY, data=b"z")
    assert code == "bad_request" and recorder.events == [("delete_forwarded", (r["hash"],))]
