"""Node-to-node link authentication and membership ops, in-process (exact answers) and against
a real daemon (forged, replayed and flooded records; unreachable records never become live)."""

import time

import pytest
import trio

from firmware.client import connect
from firmware.identity import Identity
from firmware.link import Dialer
from firmware.net.peers import PeerAuth, authenticated_dial, ping, require_peer
from firmware.net.settings import parse_bootstrap
from firmware.proto import pow
from firmware.proto.records import FLAG_REACHABLE, make_record, sign_hello, verify_record
from firmware.serve.pipeline import ConnInfo, Pipeline, RateLimiter
from tests.conftest import TEST_POW_BITS

SERVER = Identity(b"\x05" * 32)
CLIENT = Identity(b"\x06" * 32)
T0 = 1_800_000_000_000


def record_of(ident, seq=1, port=9, now=T0, lifetime=3_600_000):
    """A record with the id's proof of work at the test networks' difficulty (real nodes in
    these tests demand it: tests/conftest.py TEST_POW_BITS)."""
    return make_record(ident.signing_key, seq=seq, addrs=["127.0.0.1"], port=port,
                       version="t", flags=FLAG_REACHABLE, issued=now, expires=now + lifetime,
                       pow=pow.solve(ident.node_id, TEST_POW_BITS))


class Seen:
    def __init__(self):
        self.records = []

    def __call__(self, peer, wire):
        self.records.append((peer, wire))


def auth_pipeline(auth, **more_ops):
    """The node's pipeline serving what PeerAuth serves (no store: only node ops here)."""
    return Pipeline(storage=None, limiter=RateLimiter(1e6, 10**6),
                    node_ops={"challenge": auth.challenge, "hello": auth.hello,
                              "ping": auth.ping, **more_ops})


def handler_with_auth():
    seen = Seen()
    own = record_of(SERVER)
    auth = PeerAuth(SERVER, own_record=lambda: own, on_record=seen, rand=lambda n: b"\x77" * n)

    async def gossip(frame, conn, now):
        return {"peer": require_peer(conn, "gossip")}

    return auth_pipeline(auth, gossip=gossip), auth, seen, own


def req(op, args, rid=1):
    return {"v": 2, "id": rid, "op": op, "args": args}


async def test_hello_sets_the_peer_id_once_proven():
    h, auth, seen, own = handler_with_auth()
    conn = ConnInfo("127.0.0.1")
    r = await h.respond(req("gossip", {}), conn, T0)
    assert r["err"]["code"] == "bad_request" and "challenge" in r["err"]["msg"]
    r = await h.respond(req("challenge", {}), conn, T0)
    assert r["ok"] == {"nonce": b"\x77" * 32, "node_id": SERVER.node_id}
    mine = record_of(CLIENT)
    sig = sign_hello(CLIENT.signing_key, SERVER.node_id, b"\x77" * 32)
    r = await h.respond(req("hello", {"node_id": CLIENT.node_id, "sig": sig,
                                      "record": mine.wire}), conn, T0)  # fmt: skip
    assert r["ok"] == {"record": own.wire}
    assert conn.peer_id == CLIENT.node_id and seen.records == [(CLIENT.node_id, mine.wire)]
    r = await h.respond(req("gossip", {}), conn, T0)
    assert r["ok"] == {"peer": CLIENT.node_id}
    assert auth.counters == {"hello_ok": 1, "hello_refused": 0, "pings_answered": 0}


@pytest.mark.parametrize("case", ["no_challenge", "wrong_nonce", "other_id", "own_id", "replay",
                                  "short_sig"])  # fmt: skip
async def test_bad_hellos_are_refused(case):
    h, auth, seen, _ = handler_with_auth()
    conn = ConnInfo("127.0.0.1")
    if case != "no_challenge":
        await h.respond(req("challenge", {}), conn, T0)
    nonce = b"\x78" * 32 if case == "wrong_nonce" else b"\x77" * 32
    claimed = {"other_id": SERVER.node_id, "own_id": SERVER.node_id}.get(case, CLIENT.node_id)
    signer = SERVER if case == "own_id" else CLIENT
    sig = sign_hello(signer.signing_key, SERVER.node_id, nonce)
    if case == "short_sig":
        sig = sig[:63]
    args = {"node_id": claimed, "sig": sig}
    if case == "replay":  # a good hello, then the same bytes again on the same link
        assert "ok" in await h.respond(req("hello", args), conn, T0)
        conn.peer_id = None
    r = await h.respond(req("hello", args), conn, T0)
    assert r["err"]["code"] == "bad_request", r
    assert conn.peer_id is None and seen.records == []


async def test_ping_answer_is_signed_for_the_tester():
    h, auth, _, own = handler_with_auth()
    r = await h.respond(req("ping", {"tester": CLIENT.node_id, "nonce": b"\x01" * 32}),
                        ConnInfo("127.0.0.1"), T0)  # fmt: skip
    from firmware.proto.records import verify_ping

    verify_ping(CLIENT.node_id, b"\x01" * 32, SERVER.node_id, r["ok"]["sig"])
    assert r["ok"]["record"] == own.wire
    r = await h.respond(req("ping", {"tester": b"x", "nonce": b"\x01" * 32}),
                        ConnInfo("127.0.0.1"), T0)  # fmt: skip
    assert r["err"]["code"] == "bad_request" and "tester" in r["err"]["msg"]


@pytest.mark.parametrize("entry,ok", [
    ("127.0.0.1:7070@" + "ab" * 32, ("127.0.0.1", 7070, b"\xab" * 32)),
    ("[::1]:7070@" + "ab" * 32, ("::1", 7070, b"\xab" * 32)),
    ("127.0.0.1:7070", None),
    ("127.0.0.1@" + "ab" * 32, None),
    ("127.0.0.1:0@" + "ab" * 32, None),
    ("127.0.0.1:7070@abcd", None),
    ("127.0.0.1:7070@" + "zz" * 32, None),
])  # fmt: skip
def test_parse_bootstrap(entry, ok):
    if ok is None:
        with pytest.raises(ValueError) as info:
            parse_bootstrap(entry)
        assert "HOST:PORT@NODEID" in str(info.value) or "64 hex" in str(info.value)
    else:
        assert parse_bootstrap(entry) == ok


# -- against a real daemon -------------------------------------------------------------------


@pytest.mark.slow
def test_real_node_refuses_bad_records_and_stays_healthy(node_factory):
    n = node_factory(network={"test_interval": 0.2, "test_backoff_max": 0.5, "max_push": 50},
                     limits={"rate_per_sec": 100_000.0, "rate_burst": 100_000}).start()
    me = Identity.generate()
    now = int(time.time() * 1000)
    mine = record_of(me, seq=10, port=1, now=now)  # port 1: nothing listens there
    dial_as_node = authenticated_dial(Dialer(), me, lambda: mine)

    async def main():
        async with dial_as_node(n.node_id, n.host, n.port, 5) as c:
            forged = {"body": mine.wire["body"], "sig": bytes(64)}
            r = await c.request("gossip", {"push": [forged]})
            assert r["accepted"] == 0
            r = await c.request("gossip", {"push": [mine.wire]})
            assert r["accepted"] == 0  # already known from hello
            older = record_of(me, seq=9, port=2, now=now)
            r = await c.request("gossip", {"push": [older.wire]})
            assert r["accepted"] == 0  # a replayed older seq never replaces the newer one
            r = await c.request("gossip", {"have": []})
            bodies = [w["body"] for w in r["records"]]
            assert mine.wire["body"] in bodies and older.wire["body"] not in bodies
            theirs = verify_record(r["records"][0], int(time.time() * 1000))  # own first
            flood = [record_of(Identity.generate(), port=1, now=now).wire for _ in range(80)]
            r = await c.request("gossip", {"push": flood})
            assert r["accepted"] == 50  # max_push: the other 30 refused as a flood
            expired = record_of(Identity.generate(), now=now - 7_200_000)
            r = await c.request("gossip", {"push": [expired.wire, "junk", {"body": 1}]})
            assert r["accepted"] == 0
        # the node's own record passes the same test
        assert await ping(Dialer(), me, theirs.id, theirs.address) is True
        assert theirs.id == n.node_id
        async with connect(n.host, n.port, n.node_id) as c:
            with trio.fail_after(20):  # until every unreachable record was tested at least once
                while (info := await c.info())["reachability_failed"] < 51:
                    await trio.sleep(0.1)
            return info

    info = trio.run(main)
    assert info["state"] == "serving"
    assert info["peers_known"] == 51 and info["peers_live"] == 0  # none ever answered a ping
    assert info["records_refused"] == 1 + 30 + 3  # forged, flood overflow, expired + 2 junk
    assert info["reachability_failed"] >= 51


@pytest.mark.slow
def test_a_wrong_bootstrap_id_is_reported_to_the_operator(node_factory):
    a = node_factory("a").start()
    wrong = Identity.generate().id_hex
    b = node_factory("b", network={"bootstrap": [f"{a.host}:{a.port}@{wrong}"],
                                   "gossip_interval": 0.2}).start()  # fmt: skip
    deadline = time.monotonic() + 20
    while "bootstrap_failed" not in b.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    line = next(x for x in b.output().splitlines() if "bootstrap_failed" in x)
    assert "warning" in line and f"{a.host}:{a.port}" in line
    assert "not the expected" in line and wrong in line  # the pin mismatch, spelled out

    async def peers():
        async with connect(b.host, b.port, b.node_id) as c:
            return (await c.info())["peers_known"]

    assert trio.run(peers) == 0  # nothing learned from a node that is not who we asked for


async def test_denied_node_gets_no_link_and_no_ping():
    own = record_of(SERVER)
    h = auth_pipeline(PeerAuth(SERVER, own_record=lambda: own, on_record=Seen(),
                               rand=lambda n: b"\x77" * n, denied=frozenset([CLIENT.node_id])))
    conn = ConnInfo("127.0.0.1")
    await h.respond(req("challenge", {}), conn, T0)
    sig = sign_hello(CLIENT.signing_key, SERVER.node_id, b"\x77" * 32)
    r = await h.respond(req("hello", {"node_id": CLIENT.node_id, "sig": sig}), conn, T0)
    assert "deny list" in r["err"]["msg"] and conn.peer_id is None
    r = await h.respond(req("ping", {"tester": CLIENT.node_id, "nonce": b"\x01" * 32}), conn, T0)
    assert "deny list" in r["err"]["msg"]
