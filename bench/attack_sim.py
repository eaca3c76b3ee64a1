"""Attack simulator: how many mailboxes and onion paths one well-equipped stranger takes.

Pure and in-process: real placement and path code (firmware/proto/placement.py, paths.py),
real BLAKE2b weights, simulated addresses. No sockets.

**Honest network** (N nodes, IPv4, ``honest_network``): home broadband as a few hundred ISPs
with Zipf(1) market shares; ISP i owns max(1, round(share_i x 3000)) /16 blocks, a node takes
one of its ISP's blocks, a random /24 in it and a host. 5 % of nodes are a second box in a
household that already has one (same public address); 30 % are relayed (behind a NAT nobody can
open), naming two random reachable honest nodes as relays and their own public address.

**Attacker**: A addresses in S /16 networks of its own (hosting blocks), spread over as many
/24s as it can (the worst case for us: one /24 each), I running ids, and C CPU-hours to make
ids. Ids are free in v1 (an Ed25519 key, ~40 us); with the v2 proof of work one id costs
2**bits tries at the C floor measured in this run (bench/pow.py). Targets: T random mailboxes.

Three regimes, the same attacker:
- ``v1``: today - plain rendezvous over ids, ids free, paths: final hop from the swarm, the
  other two uniform over the other nodes.
- ``rule``: the issue's literal rule - walk the *id* ranking, one node per /24, at most two per
  /16 - with the proof of work. Shown because it is not enough: the attacker's ids still make
  up half the ranking, and grinding still moves them up.
- ``v2``: this branch - networks ranked first (``Placement``), path rules (``PathPicker``).

Two attacker strategies per regime, the better one counts: **random** (run I random ids: the
share of all targets it then holds >= 3 of 5 places of) and **targeted** (grind ids with its CPU
budget for a subset of targets known in advance and run, for as many of them as its I ids
allow, 3 ids that each beat the target's 3rd-best honest id, placed in distinct /24s over two
/16s; then measured exactly). Paths: P paths for random (client, recipient) pairs; "inside" =
all three hops are the attacker's.

Usage: .venv/bin/python bench/attack_sim.py [--honest 1000] [--ids 1000] [--nets 4]
       [--addresses 1000] [--cpu-hours 24] [--targets 1000] [--grind-targets 100]
       [--paths 10000] [--sweep 4,16,64] [--seed 1]
"""

import argparse
import hashlib
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from firmware.proto import pow  # noqa: E402
from firmware.proto.onion import Hop  # noqa: E402
from firmware.proto.paths import PathPicker  # noqa: E402
from firmware.proto.placement import Member, Placement, address_nets, rank  # noqa: E402

K = 5
_b2 = hashlib.blake2b


def _w(key, r):
    return _b2(key + r, digest_size=8).digest()


class Node:
    __slots__ = ("id", "host", "relays", "relayed", "bad")

    def __init__(self, node_id, host, relays=(), bad=False):
        self.id, self.host, self.relays, self.relayed, self.bad = (
            node_id, host, tuple(relays), bool(relays), bad)  # fmt: skip


def honest_network(n, rng, *, isps=300, blocks=3000, households=0.05, relayed=0.30, taken=()):
    shares = [1 / (i + 1) for i in range(isps)]
    total = sum(shares)
    free16 = [(a, b) for a in range(1, 224) for b in range(256) if a not in (10, 127)
              and (a, b) not in taken]  # fmt: skip
    rng.shuffle(free16)
    owned, pos = [], 0
    for s in shares:
        c = max(1, round(s / total * blocks))
        owned.append(free16[pos : pos + c])
        pos += c
    nodes = []
    for _ in range(n):
        if nodes and rng.random() < households:
            host = rng.choice(nodes).host  # a second box at home
        else:
            a, b = rng.choice(rng.choices(owned, weights=shares)[0])
            host = f"{a}.{b}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        nodes.append(Node(rng.randbytes(32), host))
    reachable = list(nodes)
    for nd in nodes:
        if rng.random() < relayed:
            nd.relays = tuple(r.id for r in rng.sample(reachable, 2) if r is not nd)[:2]
            nd.relayed = True
    return nodes


def attacker_hosts(n_addresses, nets, rng, taken):
    """``n_addresses`` hosts over ``nets`` /16s of its own, one /24 each as far as possible."""
    pool = [(a, b) for a in range(1, 224) for b in range(256) if (a, b) not in taken]
    mine = rng.sample(pool, nets)
    return [f"{mine[i % nets][0]}.{mine[i % nets][1]}.{(i // nets) % 256}."
            f"{1 + (i // (nets * 256)) % 254}" for i in range(n_addresses)], mine  # fmt: skip


# -- placements -----------------------------------------------------------------------------


def members(nodes):
    host_of = {n.id: n.host for n in nodes}
    out = []
    for n in nodes:
        n16, n24 = address_nets(n.host)
        s16, s24 = {n16}, {n24}
        for r in n.relays:
            r16, r24 = address_nets(host_of[r]) if r in host_of else (b"r" + r, b"r" + r)
            s16.add(r16)
            s24.add(r24)
        out.append(Member(n.id, n16, n24, frozenset(s16), frozenset(s24)))
    return out


def swarm_v1(nodes, r):
    return rank([n.id for n in nodes], r, K)


def swarm_rule(mems, r):
    """The issue's literal rule: walk the id ranking; one per /24, at most two per /16; then
    any number per /16, then no rule (same fallback order as v2)."""
    order = sorted(mems, key=lambda m: _w(m.node_id, r), reverse=True)
    chosen, used24, per16 = [], set(), {}
    for cap, strict in ((2, True), (None, True), (None, False)):
        for m in order:
            if len(chosen) == K:
                return tuple(chosen)
            if m.node_id in chosen or (strict and used24 & m.nets24):
                continue
            if cap is not None and any(per16.get(x, 0) >= cap for x in m.nets16):
                continue
            chosen.append(m.node_id)
            used24 |= m.nets24
            for x in m.nets16:
                per16[x] = per16.get(x, 0) + 1
    return tuple(chosen)


def capture_stats(swarms, bad):
    held = [sum(i in bad for i in s) for s in swarms]
    return {"captured": sum(h >= 3 for h in held), "targets": len(held),
            "share": sum(h >= 3 for h in held) / len(held), "max_places": max(held),
            "mean_places": sum(held) / len(held)}  # fmt: skip


# -- the attacker's ids ---------------------------------------------------------------------


def ids_affordable(cpu_hours, s_per_id):
    return int(cpu_hours * 3600 / s_per_id)


def targeted_ids(honest, targets, ground, budget, hosts, rng):
    """Greedy: for each target (in order) take 3 ground ids that beat its 3rd-best honest id,
    while the running budget lasts; addresses in distinct /24s spread over the /16s."""
    running = []
    used = set()
    host_iter = iter(hosts)
    for r in targets:
        if len(running) + 3 > budget:
            break
        third = sorted((_w(n.id, r) for n in honest), reverse=True)[2]
        picks = [g for g in sorted(ground, key=lambda g: _w(g, r), reverse=True)[:3]
                 if _w(g, r) > third and g not in used]  # fmt: skip
        if len(picks) < 3:
            continue
        for g in picks:
            used.add(g)
            running.append(Node(g, next(host_iter), bad=True))
    while len(running) < budget:
        running.append(Node(rng.randbytes(32), next(host_iter), bad=True))
    return running


# -- paths ----------------------------------------------------------------------------------


def paths_v1(nodes, n_paths, rng):
    ids = [n.id for n in nodes]
    bad = {n.id for n in nodes if n.bad}
    inside = 0
    for _ in range(n_paths):
        r = rng.randbytes(32)
        swarm = swarm_v1(nodes, r)
        final = rng.choice(swarm)
        rest = rng.sample(ids, 8)
        rest = [i for i in rest if i not in swarm][:2]
        inside += final in bad and all(i in bad for i in rest)
    return inside


def paths_v2(nodes, placement, n_paths, rng):
    host_of = {n.id: n.host for n in nodes}
    hops = {n.id: Hop(n.id, n.host, 1, relayed=n.relayed,
                      relay_hosts=tuple(host_of[r] for r in n.relays)) for n in nodes}  # fmt: skip
    picker = PathPicker(list(hops.values()))
    honest = [n for n in nodes if not n.bad]
    bad = {n.id for n in nodes if n.bad}
    inside, levels = 0, {}
    for _ in range(n_paths):
        r = rng.randbytes(32)
        swarm = placement.swarm(r)
        path, level = picker.pick(finals=[hops[i] for i in swarm], swarm=swarm,
                                  client_host=rng.choice(honest).host, rng=rng)  # fmt: skip
        levels[level] = levels.get(level, 0) + 1
        inside += all(h.node_id in bad for h in path)
    return inside, levels


# -- one scenario ---------------------------------------------------------------------------


def scenario(a, nets, rng, s_per_id, *, do_paths=True):
    t0 = time.process_time()
    hosts, mine = attacker_hosts(a.addresses, nets, rng, taken=())
    honest = honest_network(a.honest, rng, taken=set(mine))
    targets = [rng.randbytes(32) for _ in range(a.targets)]
    grind_targets = targets[: a.grind_targets]
    out = {"nets": nets, "honest_16s": len({address_nets(n.host)[0] for n in honest}),
           "honest_24s": len({address_nets(n.host)[1] for n in honest})}  # fmt: skip
    random_bad = [Node(rng.randbytes(32), h, bad=True) for h in hosts[: a.ids]]
    bad_ids = {n.id for n in random_bad}
    v2_ids = ids_affordable(a.cpu_hours, s_per_id)
    for regime in ("v1", "rule", "v2"):
        nodes = honest + random_bad
        mems = members(nodes)
        if regime == "v1":
            swarms = [swarm_v1(nodes, r) for r in targets]
        elif regime == "rule":
            swarms = [swarm_rule(mems, r) for r in targets]
        else:
            placement = Placement(mems)
            swarms = [placement.swarm(r) for r in targets]
        res = {"random_ids": capture_stats(swarms, bad_ids)}
        if regime != "v2":  # grinding only helps where ids are ranked
            n_ground = a.free_ground if regime == "v1" else min(v2_ids, a.max_ground)
            ground = [rng.randbytes(32) for _ in range(n_ground)]
            running = targeted_ids(honest, grind_targets, ground, a.ids, hosts, rng)
            tnodes = honest + running
            tbad = {n.id for n in running}
            if regime == "v1":
                ts = [swarm_v1(tnodes, r) for r in grind_targets]
            else:
                tm = members(tnodes)
                ts = [swarm_rule(tm, r) for r in grind_targets]
            res["targeted"] = capture_stats(ts, tbad) | {"ground_ids": n_ground}
        else:
            res["targeted"] = {"note": "networks rank first: ground ids cannot move a /16 up, "
                               "so running random ids is the attacker's best"}  # fmt: skip
        if do_paths:
            if regime == "v1":
                res["paths_inside"] = paths_v1(nodes, a.paths, rng)
            elif regime == "v2":
                inside, levels = paths_v2(nodes, placement, a.paths, rng)
                res["paths_inside"] = inside
                res["path_levels"] = levels
            if "paths_inside" in res:
                res["paths"] = a.paths
                res["paths_inside_share"] = res["paths_inside"] / a.paths
        out[regime] = res
    out["attacker_ids_affordable_v2"] = v2_ids
    out["cpu_s"] = round(time.process_time() - t0, 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--honest", type=int, default=1000)
    ap.add_argument("--ids", type=int, default=1000, help="attacker's running ids")
    ap.add_argument("--nets", type=int, default=4, help="attacker's /16 networks")
    ap.add_argument("--addresses", type=int, default=1000)
    ap.add_argument("--cpu-hours", type=float, default=24.0)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--grind-targets", type=int, default=100)
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--free-ground", type=int, default=20_000,
                    help="ids ground in v1 (free: this is only the simulation's cap)")
    ap.add_argument("--max-ground", type=int, default=50_000)
    ap.add_argument("--sweep", default="16,64", help="more /16 counts for v2 (no paths)")
    ap.add_argument("--bits", type=int, default=pow.DEFAULT_BITS)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    buf = os.urandom(128 * 100_000)
    t0 = time.process_time()
    hashlib.blake2b(buf).digest()
    floor_us = (time.process_time() - t0) / 100_000 * 1e6
    s_per_id = pow.expected_hashes(a.bits) * floor_us / 1e6
    res = {"bench": "attack_sim", "honest": a.honest, "attacker": {
        "ids": a.ids, "nets": a.nets, "addresses": a.addresses, "cpu_hours": a.cpu_hours,
        "pow_bits": a.bits, "s_per_id_c_floor": round(s_per_id, 2)}, "seed": a.seed}
    res["main"] = scenario(a, a.nets, rng, s_per_id)
    res["sweep"] = [scenario(a, int(s), rng, s_per_id, do_paths=False)
                    for s in a.sweep.split(",") if s]  # fmt: skip
    print(json.dumps(res, indent=1))
    m = res["main"]

    def pct(x):
        return f"{100 * x:.2f} %"

    print(f"honest {a.honest} nodes in {m['honest_16s']} /16s; attacker {a.ids} ids, "
          f"{a.nets} /16s, {a.addresses} addresses, {a.cpu_hours:g} CPU-h "
          f"({m['attacker_ids_affordable_v2']:,} ids at {a.bits} bits)")
    for regime, name in (("v1", "today (v1)"), ("rule", "id ranking + /24 + 2 per /16 + pow"),
                         ("v2", "v2 (networks first)")):  # fmt: skip
        r = m[regime]
        line = (f"  {name}: random ids capture {r['random_ids']['captured']}/"
                f"{r['random_ids']['targets']} mailboxes ({pct(r['random_ids']['share'])}, "
                f"max {r['random_ids']['max_places']} of 5 places)")
        if "captured" in r["targeted"]:
            t = r["targeted"]
            line += (f"; targeted ({t['ground_ids']:,} ground ids) "
                     f"{t['captured']}/{t['targets']} ({pct(t['share'])})")
        if "paths_inside" in r:
            line += f"; paths inside {r['paths_inside']}/{r['paths']}"
        print(line)
    for s in res["sweep"]:
        r = s["v2"]["random_ids"]
        print(f"  v2 with {s['nets']} /16s: {r['captured']}/{r['targets']} captured, "
              f"max {r['max_places']} of 5 places")


if __name__ == "__main__":
    main()
