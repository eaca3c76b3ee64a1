"""The membership service's loops in virtual time (trio autojump clock): bootstrap, liveness by
signed ping, failure detection, record re-issue. Links are in-process: each request goes to the
peer's real op handler (CBOR round-tripped), a first contact exchanges records as hello does."""

import random
import types

import cbor2
import trio

from firmware.identity import Identity
from firmware.link import LinkDown
from firmware.logs import Log
from firmware.net.membership import MembershipService
from firmware.net.peers import PeerAuth
from firmware.net.roster import AdvertisedAddress, Roster, live_set_digest
from firmware.net.settings import NETWORK
from firmware.serve.pipeline import ConnInfo

T0 = 1_800_000_000_000


def cfg(**over):
    values = {k.name: k.default for k in NETWORK.keys}
    values["pow_bits"] = 0  # an in-process test network without id work (tests/proto/test_pow*)
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
                    raise LinkDown(f"{node_id.hex()[:8]} unreachable")
                svc, auth = net.nodes[node_id]
                if (me, node_id) not in net.linked:  # what hello does on a new link
                    net.linked.add((me, node_id))
                    svc.roster.merge_from(me, net.nodes[me][0].roster.own().wire)
                    net.nodes[me][0].roster.merge_from(node_id, svc.roster.own().wire)
                fn = {"gossip": svc.op_gossip, "ping": auth.ping}[op]
                frame = cbor2.loads(cbor2.dumps({"op": op, "args": args}))
                result = await fn(frame, ConnInfo("127.0.0.1", peer_id=me), svc.clock_ms())
                return cbor2.loads(cbor2.dumps(result))

        return Links()

    def add(self, seed, port, **over):
        ident = Identity(bytes([seed]) * 32)
        clock = lambda: T0 + int(trio.current_time() * 1000)  # noqa: E731
        c = cfg(**over)
        roster = Roster(ident, c, AdvertisedAddress("", 0, ("127.0.0.1", port)), version="t",
                        clock_ms=clock, log=Log("error"), rng=random.Random(seed))

        async def no_relayed(identity, record, *, timeout):
            return False

        svc = MembershipService(ident, c, roster, self.links_for(ident.node_id),
                                relayed_ping=no_relayed, clock_ms=clock, log=Log("error"),
                                rng=random.Random(seed))
        auth = PeerAuth(ident, own_record=roster.own, on_record=roster.merge_from)
        self.nodes[ident.node_id] = (svc, auth)
        return svc


def boot(svc):
    rec = svc.roster.own()
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
    assert b.roster.placement.nodes == a.roster.placement.nodes == frozenset(net.nodes)
    epoch = b.roster.placement.epoch

    # a's record is re-issued at half its 60 s lifetime, and the newer seq reaches b
    first_seq = a.roster.own().seq
    await trio.sleep(20)
    assert a.roster.own().seq > first_seq and a.roster.records_issued >= 1
    assert b.roster.state.get(a.identity.node_id).seq == a.roster.own().seq
    assert b.roster.placement.epoch == epoch  # same address: no membership change

    # c goes away: after two failed tests (10 s, then 20 s back-off) the others drop it
    net.down.add(c.identity.node_id)
    await trio.sleep(60)
    both = live_set_digest([a.identity.node_id, b.identity.node_id])
    assert a.info()["live_set"] == b.info()["live_set"] == both
    assert b.roster.placement.epoch == epoch + 1
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
    assert a.info()["peers_known"] == 0 and a.roster.placement.nodes == {a.identity.node_id}
    assert net.requests == []
