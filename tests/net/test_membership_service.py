"""The membership service's loops in virtual time (trio autojump clock): bootstrap, liveness by
signed ping, failure detection, record re-issue. Links are in-process: each request goes to the
peer's real op handler (CBOR round-tripped), a first contact exchanges records as hello does."""

import random
import types

import cbor2
import trio

from firmware.identity import Identity
from firmware.logs import Log
from firmware.net import NETWORK
from firmware.net.membership import MembershipService, live_set_digest
from firmware.net.peers import PeerAuth, PeerUnavailable
from firmware.rpc import ConnInfo

T0 = 1_800_000_000_000


def cfg(**over):
    values = {k.name: k.default for k in NETWORK.keys}
    values.update(over)
    return types.SimpleNamespace(**values)


class Net:
    """The wire between in-process services: who is up, and hello's record exchange."""

    def __init__(self):
        self.nodes = {}  # node id -> (service, auth)
        self.down = set()
        self.linked = set()
        self.requests = []

    def links_for(self, me):
        net = self

        class Links:
            async def request(self, node_id, address, op, args, *, timeout=None):
                net.requests.append((me, node_id, op))
                await trio.sleep(0.01)  # a little latency, so loops interleave
                if node_id in net.down or me in net.down or node_id not in net.nodes:
                    raise PeerUnavailable(f"{node_id.hex()[:8]} unreachable")
                svc, auth = net.nodes[node_id]
                if (me, node_id) not in net.linked:  # what hello does on a new link
                    net.linked.add((me, node_id))
                    svc.on_record(me, net.nodes[me][0].own_record().wire)
                    net.nodes[me][0].on_record(node_id, svc.own_record().wire)
                fn = {"gossip": svc.op_gossip, "ping": auth.ping}[op]
                frame = cbor2.loads(cbor2.dumps({"op": op, "args": args}))
                result = await fn(frame, ConnInfo("127.0.0.1", peer_id=me), svc.clock_ms())
                return cbor2.loads(cbor2.dumps(result))

        return Links()

    def add(self, seed, port, **over):
        ident = Identity(bytes([seed]) * 32)
        clock = lambda: T0 + int(trio.current_time() * 1000)  # noqa: E731
        svc = MembershipService(ident, cfg(**over), links=self.links_for(ident.node_id),
                                clock_ms=clock, log=Log("error"), version="t",
                                address=lambda: ("127.0.0.1", port), rng=random.Random(seed))  # fmt: skip
        auth = PeerAuth(ident, own_record=svc.own_record, on_record=svc.on_record)
        self.nodes[ident.node_id] = (svc, auth)
        return svc


def boot(svc):
    rec = svc.own_record()
    return f"127.0.0.1:{rec.port}@{rec.id.hex()}"


async def test_bootstrap_liveness_failure_and_reissue(nursery, autojump_clock):
    net = Net()
    a = net.add(1, 7001, record_lifetime=60.0)
    await nursery.start(a.run)
    b = net.add(2, 7002, bootstrap=[boot(a)])
    c = net.add(3, 7003, bootstrap=[boot(a)])
    await nursery.start(b.run)
    await nursery.start(c.run)
    everyone = live_set_digest([s.identity.node_id for s in (a, b, c)])

    await trio.sleep(20)  # a few gossip rounds (5 s) and tests (10 s)
    assert [s.info()["live_set"] for s in (a, b, c)] == [everyone] * 3
    assert all(s.info()["peers_live"] == 2 for s in (a, b, c))
    assert b.placement.nodes == a.placement.nodes == frozenset(net.nodes)
    epoch = b.placement.epoch

    # a's record is re-issued at half its 60 s lifetime, and the newer seq reaches b
    first_seq = a.own_record().seq
    await trio.sleep(20)
    assert a.own_record().seq > first_seq and a.counters["records_issued"] >= 1
    assert b.state.get(a.identity.node_id).seq == a.own_record().seq
    assert b.placement.epoch == epoch  # same address: no membership change

    # c goes away: after two failed tests (10 s, then 20 s back-off) the others drop it
    net.down.add(c.identity.node_id)
    await trio.sleep(60)
    both = live_set_digest([a.identity.node_id, b.identity.node_id])
    assert a.info()["live_set"] == b.info()["live_set"] == both
    assert b.placement.epoch == epoch + 1
    assert b.info()["reachability_failed"] >= 2

    # it comes back: re-tested after its back-off, live again everywhere
    net.down.discard(c.identity.node_id)
    await trio.sleep(150)
    assert [s.info()["live_set"] for s in (a, b, c)] == [everyone] * 3


async def test_a_node_without_bootstrap_stays_alone(nursery, autojump_clock):
    net = Net()
    a = net.add(1, 7001)
    await nursery.start(a.run)
    await trio.sleep(30)
    assert a.info()["peers_known"] == 0 and a.placement.nodes == {a.identity.node_id}
    assert net.requests == []
