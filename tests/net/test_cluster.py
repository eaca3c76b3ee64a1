"""Real node processes on 127.0.0.1: membership convergence, k replicas, node loss, hand-off to
new owners, partition and heal. Intervals are shortened in the config so each scenario takes
seconds; every wait polls the nodes' own `info` (or retrieve) until the condition holds.
"""

import json
import os
import time

import nacl.signing
import pytest
import trio

from firmware.client import connect
from firmware.identity import Identity, ensure_data_dir, node_key_path, write_key_file
from firmware.net.roster import live_set_digest
from firmware.proto.placement import rank
from tests.conftest import NodeProcess, run_cli, write_toml

pytestmark = pytest.mark.slow

NET = {"gossip_interval": 0.3, "test_interval": 0.5, "test_backoff_max": 2.0,
       "test_timeout": 2.0, "anti_entropy_interval": 1.0, "settle_delay": 0.2,
       "replicate_timeout": 3.0, "link_timeout": 3.0, "max_test_rate": 50.0}  # fmt: skip
LIMITS = {"rate_per_sec": 100_000.0, "rate_burst": 100_000}
K = 5


def config(bootstrap=(), **net):
    return {"network": {**NET, "bootstrap": [addr(n) for n in bootstrap], **net},
            "limits": LIMITS}  # fmt: skip


def addr(n):
    return f"{n.host}:{n.port}@{n.node_id.hex()}"


def with_identity(node, seed):
    """Give a not-yet-started node a known key, so tests know its id (and swarms) up front."""
    ensure_data_dir(node.data_dir)
    ident = Identity(seed)
    write_key_file(node_key_path(node.data_dir), ident)
    node.known_id = ident.node_id
    return node


def run(fn, *args):
    return trio.run(fn, *args)


async def _info(n):
    async with connect(n.host, n.port, n.node_id, timeout=5) as c:
        return await c.info()


def infos(nodes):
    async def main():
        return [await _info(n) for n in nodes]

    return run(main)


def wait_for(what, pred, timeout=40.0, interval=0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last is True or (last and not isinstance(last, str)):
                return last
        except (ConnectionError, OSError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def converged(nodes):
    """True when every node sees exactly `nodes` live (same live-set fingerprint)."""
    want = live_set_digest([n.node_id for n in nodes])
    got = [i["live_set"] for i in infos(nodes)]
    return all(g == want for g in got) or f"live sets {got}, want {want}"


def store(n, recipient, data):
    async def main():
        async with connect(n.host, n.port, n.node_id, timeout=5) as c:
            return await c.store(recipient, data, ttl_ms=3_600_000)

    return run(main)


def held(n, key):
    """Hashes of the messages node `n` holds for `key`'s owner (a signed retrieve)."""

    async def main():
        async with connect(n.host, n.port, n.node_id, timeout=5) as c:
            return {m.hash for m in await c.retrieve_all(key)}

    return run(main)


def start_all(nodes):
    for n in nodes:
        n.start()
    return nodes


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(name, bootstrap=(), seed=None, **net):
        n = NodeProcess(tmp_path, config(bootstrap, **net), name=name)
        if seed is not None:
            with_identity(n, seed)
        made.append(n)
        return n

    yield make
    for n in made:
        n.kill()


def test_nodes_converge_and_a_store_lands_on_k_replicas(cluster):
    seed = cluster("n0").start()
    nodes = [seed] + start_all([cluster(f"n{i}", [seed]) for i in range(1, 7)])
    wait_for("7 nodes to agree on the live set", lambda: converged(nodes))

    user = nacl.signing.SigningKey.generate()
    recipient = bytes(user.verify_key)
    swarm = set(rank([n.node_id for n in nodes], recipient, K))
    outsider = next(n for n in nodes if n.node_id not in swarm)
    r = store(outsider, recipient, b"sealed-1")
    assert r.replicas == K  # every member acknowledged a durable copy before the answer
    for n in nodes:
        if n.node_id in swarm:
            assert held(n, user) == {r.hash}, f"swarm member {n.node_id.hex()[:8]} lacks it"
    # the entry node is not responsible: it hands the message off and drops it
    wait_for("the non-member entry node to drop its copy", lambda: held(outsider, user) == set())
    assert sum(held(n, user) == {r.hash} for n in nodes) == K

    status = run_cli("status", "--json", "--data-dir", outsider.data_dir)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["peers_live"], shown["peers_known"], shown["replicas_last"]) == (6, 6, K)
    assert shown["handoff_dropped"] == 1

    # the recipient's signed delete, sent to one member, reaches every member
    member = next(n for n in nodes if n.node_id in swarm)

    async def delete():
        async with connect(member.host, member.port, member.node_id, timeout=5) as c:
            return await c.delete(user, [r.hash])

    assert tuple(run(delete)) == (r.hash,)
    assert all(held(n, user) == set() for n in nodes)


def test_node_loss_then_new_owners_take_over(cluster):
    seeds = [bytes([i + 1]) * 32 for i in range(10)]
    old_ids = [Identity(s).node_id for s in seeds[:7]]
    new_ids = [Identity(s).node_id for s in seeds[7:]]
    # a recipient whose swarm, once its top two members died and three new nodes joined,
    # contains all three new nodes (so hand-off must move the share to them)
    while True:
        user = nacl.signing.SigningKey.generate()
        recipient = bytes(user.verify_key)
        first = rank(old_ids, recipient, K)
        killed = set(first[:2])
        later = rank([i for i in old_ids if i not in killed] + new_ids, recipient, K)
        if set(new_ids) <= set(later):
            break

    n0 = cluster("o0", seed=seeds[0]).start()
    old = [n0] + start_all([cluster(f"o{i}", [n0], seed=seeds[i]) for i in range(1, 7)])
    wait_for("7 nodes to agree", lambda: converged(old))
    by_id = {n.node_id: n for n in old}
    r = store(by_id[first[0]], recipient, b"survives")
    assert r.replicas == K

    # kill two of the five members: the other three still answer at once
    for i in killed:
        by_id[i].kill()
    alive = [n for n in old if n.node_id not in killed]
    for i in first[2:]:
        assert held(by_id[i], user) == {r.hash}
    wait_for("5 survivors to agree", lambda: converged(alive))
    # the swarm refills to k copies from the survivors (anti-entropy with the new members)
    wait_for("k copies again", lambda: sum(held(n, user) == {r.hash} for n in alive) == K
             or "copies: " + str(sum(held(n, user) == {r.hash} for n in alive)))  # fmt: skip

    new = start_all([cluster(f"x{i}", [n0 if n0 in alive else alive[0]], seed=seeds[7 + i])
                     for i in range(3)])  # fmt: skip
    everyone = alive + new
    wait_for("8 nodes to agree", lambda: converged(everyone))
    owners = set(rank([n.node_id for n in everyone], recipient, K))
    assert set(new_ids) <= owners

    def share_moved():
        have = {n.node_id for n in everyone if held(n, user) == {r.hash}}
        return have == owners or f"holders {sorted(h.hex()[:6] for h in have)}"

    wait_for("the share to sit exactly on the 5 current owners (old ones dropped it)",
             share_moved)  # fmt: skip
    dropped = sum(run(_info, n)["handoff_dropped"] for n in alive)
    assert dropped >= 3  # the three displaced owners dropped after the new owners confirmed


def reconfigure(node, **net):
    """Restart ``node`` with changed [network] settings (same identity and data)."""
    node.stop()
    node.config["network"].update(net)
    write_toml(node.config_path, node.config)
    node.start()


def test_partition_then_heal_converges_to_the_union(cluster):
    a0 = cluster("a0").start()
    others = start_all([cluster(n, [a0]) for n in ("a1", "a2", "b0", "b1", "b2")])
    side_a, side_b = [a0, *others[:2]], others[2:]
    everyone = side_a + side_b
    wait_for("all 6 to agree", lambda: converged(everyone))
    users = [nacl.signing.SigningKey.generate() for _ in range(3)]
    stored = {bytes(u.verify_key): {store(a0, bytes(u.verify_key), b"before").hash}
              for u in users}  # fmt: skip

    # cut the links between the halves: side A refuses side B ([network] deny). Side B keeps
    # running; it finds A unreachable by its own tests and re-forms its swarms without A.
    deny_b = [n.node_id.hex() for n in side_b]
    reconfigure(a0, deny=deny_b, bootstrap=[])
    for n in side_a[1:]:
        reconfigure(n, deny=deny_b, bootstrap=[addr(a0)])
    wait_for("side A to agree on itself", lambda: converged(side_a))
    wait_for("side B to see only itself", lambda: converged(side_b))
    for j, u in enumerate(users):
        rec = bytes(u.verify_key)
        ra = store(side_a[j], rec, f"from A to {j}".encode())
        rb = store(side_b[j], rec, f"from B to {j}".encode())
        assert ra.replicas == rb.replicas == 3  # each side: all three of its nodes
        stored[rec] |= {ra.hash, rb.hash}

    # heal: side A drops the deny list and knows a B node again
    for n in side_a:
        reconfigure(n, deny=[], bootstrap=[addr(side_b[0])])
    wait_for("all 6 to agree again", lambda: converged(everyone))
    ids = [n.node_id for n in everyone]

    def union_on_owners():
        for u in users:
            rec = bytes(u.verify_key)
            owners = set(rank(ids, rec, K))
            for n in everyone:
                want = stored[rec] if n.node_id in owners else set()
                got = held(n, u)
                if got != want:
                    return f"{n.dir.name} holds {len(got)} of user {rec.hex()[:6]}, want {len(want)}"
        return True

    wait_for("every owner to hold the union and the non-owner nothing", union_on_owners, 60)
    repairs = sum(i["repairs_in"] + i["repairs_out"] for i in infos(everyone))
    assert repairs > 0


def test_bad_network_config_is_refused_with_a_fix(tmp_path):
    path = write_toml(tmp_path / "bad.toml", {"network": {"bootstrap": ["127.0.0.1:7070"]}})
    r = run_cli("config", "check", path)
    assert r.returncode == 2
    assert b"[network] bootstrap" in r.stderr and b"HOST:PORT@NODEID" in r.stderr
    assert os.path.exists(path)


def test_a_member_that_was_down_catches_up_after_restart(cluster):
    n0 = cluster("r0").start()
    nodes = [n0] + start_all([cluster(f"r{i}", [n0]) for i in range(1, 5)])
    wait_for("5 nodes to agree", lambda: converged(nodes))
    user = nacl.signing.SigningKey.generate()
    recipient = bytes(user.verify_key)
    late = nodes[3]
    late.stop()  # still counted live for a moment: its copy simply fails
    r = store(n0, recipient, b"while you were out")
    assert r.replicas == K - 1
    late.start()  # same identity and data, a new port: it re-issues its record
    wait_for("all 5 to agree again", lambda: converged(nodes))
    wait_for("the restarted member to get its copy by anti-entropy",
             lambda: held(late, user) == {r.hash})  # fmt: skip
    assert run(_info, late)["repairs_in"] + sum(
        run(_info, n)["repairs_out"] for n in nodes if n is not late) >= 1


def test_a_store_refused_for_heat_is_held_by_no_swarm_member(tmp_path, node_factory):
    """The bug that started the request-path rewrite: a node too hot to take a store answered
    `busy`, yet had already started copying it to the swarm. Three real nodes (k = 3, so all
    three are every swarm), the first one hot through its fake sysfs: the store is refused and,
    once replication has had every chance to run, nobody holds it; the same store to a cool
    node is held by all three."""
    from firmware.proto.errors import Busy
    from tests.hal.fakesys import FakeSys

    fake = FakeSys(tmp_path / "sys").pi(temp="90000\n")
    hot = node_factory("hot", **config(k=3), hal={
        "backend": "pi", "sysfs_root": str(fake.root), "vcgencmd": "", "poll_interval": 0.05})
    hot.start()
    others = [node_factory(f"n{i}", **config([hot], k=3)).start() for i in range(2)]
    nodes = [hot, *others]
    wait_for("membership", lambda: converged(nodes))
    wait_for("the hot node to know it",
             lambda: infos([hot])[0]["device"]["thermal_tier"] == "critical")
    me = nacl.signing.SigningKey.generate()
    rcpt = bytes(me.verify_key)

    async def store_to(n, data):
        async with connect(n.host, n.port, n.node_id) as c:
            return await c.store(rcpt, data)

    with pytest.raises(Busy, match="not taking new work"):
        run(store_to, hot, b"refused for heat")
    r = run(store_to, others[0], b"taken by a cool node")
    assert r.replicas == 3

    async def held(n):
        async with connect(n.host, n.port, n.node_id) as c:
            return sorted(m.data for m in await c.retrieve_all(me))

    # two more anti-entropy rounds everywhere: a copy that had started would have spread by now
    rounds = [i["anti_entropy_rounds"] for i in infos(others)]
    wait_for("two anti-entropy rounds", lambda: all(
        i["anti_entropy_rounds"] >= r + 2 for i, r in zip(infos(others), rounds, strict=True)))
    for n in nodes:
        assert run(held, n) == [b"taken by a cool node"], n.dir
