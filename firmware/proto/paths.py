"""Onion path choice under the same network rules as placement (pure; the onion client calls it).

A path is only as private as its least-watched split: if one party runs every hop it sees both
the client and the request. Ids are cheap to run in bulk from one network, so hops are drawn by
*network*, not by node:

- no two hops in one /16 (IPv6 /32), counting a relayed hop in its relays' networks too;
- no hop in the client's own /16 when the client knows its address (``client_host``): a hop
  next door could be the client's own ISP or neighbour watching both sides;
- each hop is drawn uniformly among the eligible /16 networks, then uniformly among the eligible
  nodes of that network: a network with 500 attacker ids is as likely as one with a single
  honest box. (The price: honest nodes in crowded networks relay less than lonely ones.)
- the final hop comes from the recipient's swarm (``finals``: the placement answer, so the
  request lands where the mail lives); the other hops from outside the swarm (a swarm member as
  first hop would see both the client and, as a replica, whose mail it is);
- the first hop is never relayed (the client must connect to it directly).

Small or young networks cannot always meet every rule. The rules then relax in this fixed order
until a path exists, and ``pick_path`` says which level it used:

    level 0: all rules
    level 1: non-final hops may be swarm members
    level 2: hops may share the client's /16
    level 3: two hops may share a /16 (never a /24 / IPv6 /48)
    level 4: any distinct nodes (the first hop still direct)

At every level a non-final hop is drawn from outside the swarm when any eligible node is; the
relaxation only lets swarm members in when nothing else fits (a one-network test cluster).

Randomness comes from the caller's ``rng`` (``random.SystemRandom`` in production, seeded in
tests); candidates are any objects with ``node_id``, ``host``, ``relayed`` and ``relay_hosts``
(``firmware.proto.onion.Hop``).
"""

import functools

from .placement import address_nets

__all__ = ["NoPath", "PATH_LEVELS", "nets_of", "pick_path", "PathPicker"]

PATH_LEVELS = 5


class NoPath(ValueError):
    """Not enough distinct usable nodes for a path at all (even with every rule relaxed)."""


@functools.lru_cache(maxsize=65536)  # pure in a (frozen, hashable) Hop
def nets_of(node):
    """({/16 networks}, {/24 networks}, home /16) a hop counts in: its own and its relays'."""
    own16, own24 = address_nets(node.host)
    n16, n24 = {own16}, {own24}
    for host in getattr(node, "relay_hosts", ()) or ():
        r16, r24 = address_nets(host)
        n16.add(r16)
        n24.add(r24)
    return frozenset(n16), frozenset(n24), own16


class _Cand:
    __slots__ = ("node", "nets16", "nets24", "home")

    def __init__(self, node):
        self.node = node
        self.nets16, self.nets24, self.home = nets_of(node)


class _Pool:
    """Candidates grouped by home /16, so a draw costs a few tries, not a pass over all."""

    def __init__(self, cands):
        self.cands = cands
        by_net = {}
        for c in cands:
            by_net.setdefault(c.home, []).append(c)
        self.nets = sorted(by_net)
        self.by_net = by_net

    def draw(self, ok, rng, tries=32):
        """Uniform over networks with an eligible node, then over its eligible nodes."""
        for _ in range(tries if len(self.nets) > tries else 0):  # rejection sampling
            members = [c for c in self.by_net[rng.choice(self.nets)] if ok(c)]
            if members:
                return rng.choice(members)
        eligible = {}
        for c in self.cands:
            if ok(c):
                eligible.setdefault(c.home, []).append(c)
        if not eligible:
            return None
        return rng.choice(eligible[rng.choice(sorted(eligible))])


def _try(pool, finals, swarm, client16, hops, level, rng):
    chosen, ids, used16, used24 = [], set(), set(), set()

    def ok(c, *, first=False, final=False):
        if c.node.node_id in ids:
            return False
        if first and c.node.relayed:
            return False
        if level < 4:
            if not used24.isdisjoint(c.nets24):
                return False
            if level < 3 and not used16.isdisjoint(c.nets16):
                return False
            if level < 2 and client16 is not None and client16 in c.nets16:
                return False
            if level < 1 and not final and c.node.node_id in swarm:
                return False
        return True

    def take(c):
        chosen.append(c)
        ids.add(c.node.node_id)
        used16.update(c.nets16)
        used24.update(c.nets24)

    final = None
    if finals.cands:
        final = finals.draw(lambda c: ok(c, final=True, first=hops == 1), rng)
        if final is None:
            return None
        take(final)
    def draw(pred):  # outside the swarm whenever possible, whatever the level
        c = pool.draw(lambda c: pred(c) and c.node.node_id not in swarm, rng)
        return c if c is not None or level < 1 else pool.draw(pred, rng)

    if hops - (final is not None) > 0:
        first = draw(lambda c: ok(c, first=True))
        if first is None:
            return None
        take(first)
    while len(chosen) < hops:
        c = draw(ok)
        if c is None:
            return None
        take(c)
    if final is not None:
        chosen.append(chosen.pop(0))  # final hop last, the first drawn direct hop first
    return [c.node for c in chosen]


class PathPicker:
    """Paths over one set of candidates (build once per node list, pick many times)."""

    def __init__(self, candidates):
        self.pool = _Pool([_Cand(n) for n in candidates])

    def pick(self, *, hops=3, finals=(), swarm=(), client_host=None, rng, attempts=4):
        """See :func:`pick_path`."""
        if hops < 1:
            raise ValueError("a path has at least one hop")
        final_pool = _Pool([_Cand(n) for n in finals])
        swarm_ids = frozenset(swarm) or frozenset(n.node_id for n in finals)
        client16 = address_nets(client_host)[0] if client_host else None
        for level in range(PATH_LEVELS):
            for _ in range(attempts):  # a draw can paint itself into a corner: redraw first
                path = _try(self.pool, final_pool, swarm_ids, client16, hops, level, rng)
                if path is not None:
                    return path, level
        cands = self.pool.cands + final_pool.cands
        distinct = len({c.node.node_id for c in cands})
        if distinct < hops:
            raise NoPath(f"an onion path needs {hops} distinct nodes, only {distinct} known; "
                         "bootstrap from a node that knows the network")  # fmt: skip
        raise NoPath("every usable node is relayed: none can be a first hop (the client "
                     "connects to it directly)")


def pick_path(candidates, *, hops=3, finals=(), swarm=(), client_host=None, rng):
    """A path of ``hops`` distinct nodes from ``candidates``, first hop first; the last one is
    from ``finals`` when given (in a swarm of ``swarm`` ids, default the finals themselves).

    Returns (path, level): ``level`` is the relaxation level used (0 = every rule held).
    Raises :class:`NoPath` when not even distinct nodes with a direct first hop exist.
    (Many picks over one node list: build a :class:`PathPicker` once.)"""
    return PathPicker(candidates).pick(hops=hops, finals=finals, swarm=swarm,
                                       client_host=client_host, rng=rng)  # fmt: skip
