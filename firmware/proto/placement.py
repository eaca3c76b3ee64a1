"""Placement: which k live nodes hold a recipient's mail, ranked so that ids cannot buy places.

Every node computes the same answer from the same live records, with no coordination.

**Rank** (rendezvous hashing, one level per kind of network)::

    w(key, recipient) = u64be(BLAKE2b-64(key || recipient))
    rank of a node    = (w(net16, r), w(net24, r), w(node_id, r)), highest first

where ``net16``/``net24`` are the node's networks: for IPv4 its /16 and /24, for IPv6 its /32
and /48 (``address_nets``). So networks are ranked first and an id only orders nodes inside
one /24: grinding ids (making keys until one ranks high) cannot move a node's network up. That
is the point: with plain id ranking an attacker who holds a few /16s still takes any chosen
swarm by grinding keys (bench/attack_sim.py shows it with the id proof of work included).

**Walk** the ranking and take a node unless it breaks the rules of the current level; levels
relax in this fixed order, each over the whole ranking again, until k are chosen:

    level 0: one node per /16 (IPv6 /32), and no two nodes sharing a /24 (/48)
    level 1: two per /16 (the floor Tor and the issue asked for), still one per /24
    level 2: any number per /16, still one per /24
    level 3: no rule (a network too small or too young to spread k copies: plain ranking)

A node counts in the networks of its own address (``addrs[0]`` of its record) *and* of each of
its relays (a relay sees and can drop its relayed nodes' traffic, so relay and relayed node are
one place). Two boxes in one household share a /24: one of them per swarm, each taking about
half the household's share of mailboxes. Relays not in the live set count as a network of their
own (keyed by their id), so nodes behind one unknown relay still exclude each other.

Ids given without an address (plain ``bytes``, as older callers do) form one network each, and
the ranking is then exactly the plain rendezvous of v1: ``BLAKE2b-64(node_id || recipient)``.

Cost: a cold pick hashes each distinct /16 once (plus a few members of the first networks), so
it is no dearer than plain rendezvous over ids. Each key's BLAKE2b state is kept with the key
absorbed (a pick copies it and adds the recipient, ~1.8x faster than hashing the concatenation);
swarms are cached per recipient and the cache is dropped whenever the live set changes
(``update``); it is bounded (oldest first) so a stream of one-off recipients cannot grow it.
"""

import functools
import hashlib
import heapq
import ipaddress
from dataclasses import dataclass

__all__ = ["DEFAULT_K", "LEVELS", "weight", "rank", "address_nets", "Member", "member_of",
           "members_from_records", "place", "Placement"]  # fmt: skip

DEFAULT_K = 5
LEVELS = ((1, True), (2, True), (None, True), (None, False))  # (max per /16, one per /24)
_PREFETCH = 2  # networks ranked per place wanted before falling back to a full sort
_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes


def weight(key, recipient):
    """The rendezvous weight of ``key`` (a node id or a network key) for ``recipient``."""
    return _from_bytes(_blake2b(key + recipient, digest_size=8).digest(), "big")


def rank(node_ids, recipient, k):
    """The ``k`` node ids of highest plain id weight for ``recipient`` (v1 ranking, uncached;
    what a client without addresses can compute)."""
    scored = [(_blake2b(n + recipient, digest_size=8).digest(), n) for n in node_ids]
    return tuple(n for _, n in heapq.nlargest(k, scored))


@functools.lru_cache(maxsize=65536)  # pure; parsing an address costs ~5 us
def address_nets(host):
    """(net16, net24) keys of an advertised host: IPv4 /16 and /24 (IPv4-mapped IPv6 too),
    IPv6 /32 and /48, and for a DNS name one shared "name" /16 with the name as its /24 (a name
    proves no address, so all named nodes together count as one network)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return b"n", b"n" + host.lower().rstrip(".").encode()
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    raw = ip.packed
    if ip.version == 4:
        return b"4" + raw[:2], b"4" + raw[:3]
    return b"6" + raw[:4], b"6" + raw[:6]


@dataclass(frozen=True, slots=True)
class Member:
    """One live node as placement sees it: id, home networks and every network it counts in."""

    node_id: bytes
    net16: bytes
    net24: bytes
    nets16: frozenset
    nets24: frozenset

    @classmethod
    def bare(cls, node_id):
        """An id without an address: a network of its own (plain v1 rendezvous)."""
        one = frozenset((node_id,))
        return cls(node_id, node_id, node_id, one, one)


def member_of(record, relay_hosts=()):
    """A Member from a verified record (``addrs[0]`` is its address) and the advertised hosts
    of its relays, in ``record.relays`` order (None for a relay not in the live set)."""
    net16, net24 = address_nets(record.addrs[0])
    nets16, nets24 = {net16}, {net24}
    hosts = tuple(relay_hosts)
    for i, relay_id in enumerate(record.relays):
        host = hosts[i] if i < len(hosts) else None
        r16, r24 = address_nets(host) if host is not None else (b"r" + relay_id,) * 2
        nets16.add(r16)
        nets24.add(r24)
    return Member(record.id, net16, net24, frozenset(nets16), frozenset(nets24))


def members_from_records(records):
    """Members of a live set given as verified records; relays are looked up in the same set."""
    records = list(records)
    host_of = {r.id: r.addrs[0] for r in records if r.addrs}
    return [member_of(r, [host_of.get(rid) for rid in r.relays]) for r in records]


def _fits(m, cap, strict24, used24, count16):
    if strict24 and not used24.isdisjoint(m.nets24):
        return False
    return cap is None or all(count16.get(n, 0) < cap for n in m.nets16)


def _take(m, chosen, used24, count16):
    chosen.append(m.node_id)
    used24.update(m.nets24)
    for n in m.nets16:
        count16[n] = count16.get(n, 0) + 1


class _Ranking:
    """Networks in rank order for one recipient, computed lazily (most picks need the first few)."""

    def __init__(self, placement, recipient):
        self.p = placement
        self.r = recipient
        digests = []
        add = digests.append
        for state in placement._net_states:
            h = state.copy()
            h.update(recipient)
            add(h.digest())
        self._digests = digests
        want = min(len(digests), _PREFETCH * placement.k)
        self.order = heapq.nlargest(want, zip(digests, placement._nets, strict=True))
        self._full = want == len(digests)
        self._members = {}

    def networks(self):
        i = 0
        while True:
            if i == len(self.order):
                if self._full:
                    return
                self.order = sorted(zip(self._digests, self.p._nets, strict=True), reverse=True)
                self._full = True
                continue
            yield self.order[i][1]
            i += 1

    def members(self, net16):
        """The members of network ``net16`` in rank order (by /24 weight, then id weight)."""
        got = self._members.get(net16)
        if got is None:
            p, r = self.p, self.r
            scored = []
            for m in p._by_net[net16]:
                h24 = p._key_state(m.net24).copy()
                h24.update(r)
                hid = p._key_state(m.node_id).copy()
                hid.update(r)
                scored.append((h24.digest(), hid.digest(), m.node_id, m))
            scored.sort(reverse=True, key=lambda t: t[:3])
            got = self._members[net16] = [t[3] for t in scored]
        return got


def _walk(ranking, k):
    chosen, used24, count16 = [], set(), {}
    taken = set()
    for level, (cap, strict24) in enumerate(LEVELS):
        for net in ranking.networks():
            for m in ranking.members(net):
                if m.node_id in taken or not _fits(m, cap, strict24, used24, count16):
                    continue
                _take(m, chosen, used24, count16)
                taken.add(m.node_id)
                if len(chosen) == k:
                    return tuple(chosen), level
        if len(taken) == len(ranking.p._members):
            break
    return tuple(chosen), len(LEVELS) - 1


class Placement:
    """Swarms over one live set, cached until the live set changes."""

    def __init__(self, nodes=(), *, k=DEFAULT_K, cache_size=65536):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.k = k
        self.cache_size = cache_size
        self.epoch = 0  # bumped on every live-set change; callers use it to spot stale work
        self.hits = 0
        self.misses = 0
        self.relaxed = 0  # cold picks that needed level >= 1 (few networks, or crowded ones)
        self._members = {}  # node id -> Member
        self._nodes = frozenset()
        self._nets = []  # distinct home /16 keys, same order as _net_states
        self._net_states = []
        self._by_net = {}
        self._states = {}  # key -> BLAKE2b-64 state with the key absorbed
        self._cache = {}
        self.update(nodes)

    @property
    def nodes(self):
        """The live node ids placement is computed over (a frozenset)."""
        return self._nodes

    def _key_state(self, key):
        s = self._states.get(key)
        if s is None:
            s = self._states[key] = _blake2b(key, digest_size=8)
        return s

    def update(self, nodes):
        """Set the live set: node ids (``bytes``, no address known) or :class:`Member` objects
        (``members_from_records``). Drops the cache and bumps ``epoch`` only on a real change."""
        members = {}
        for n in nodes:
            m = Member.bare(n) if type(n) is bytes else n
            if type(m) is not Member or type(m.node_id) is not bytes or len(m.node_id) != 32:
                raise ValueError("node ids must be 32-byte keys (bytes or placement.Member)")
            members[m.node_id] = m
        if members == self._members:
            return False
        self._members = members
        self._nodes = frozenset(members)
        by_net = {}
        for m in members.values():
            by_net.setdefault(m.net16, []).append(m)
        self._by_net = by_net
        self._nets = sorted(by_net)
        old = self._states
        self._states = {}
        for m in members.values():  # keep absorbed states of keys still in use
            for key in (m.net16, m.net24, m.node_id):
                if key in old:
                    self._states[key] = old[key]
        self._net_states = [self._key_state(n) for n in self._nets]
        self._cache = {}
        self.epoch += 1
        return True

    def swarm(self, recipient):
        """The tuple of up to k node ids holding ``recipient``'s messages, in the order chosen."""
        cache = self._cache
        hit = cache.get(recipient)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        if type(recipient) is not bytes or len(recipient) != 32:
            raise ValueError("recipient must be a 32-byte key")
        result, level = _walk(_Ranking(self, recipient), self.k)
        if level:
            self.relaxed += 1
        if len(cache) >= self.cache_size:
            del cache[next(iter(cache))]  # dicts keep insertion order: evict the oldest
        cache[recipient] = result
        return result

    def swarm_level(self, recipient):
        """(swarm, relaxation level used): uncached, for diagnostics and tests."""
        if type(recipient) is not bytes or len(recipient) != 32:
            raise ValueError("recipient must be a 32-byte key")
        return _walk(_Ranking(self, recipient), self.k)

    def is_member(self, node_id, recipient):
        return node_id in self.swarm(recipient)


def place(nodes, recipient, k=DEFAULT_K):
    """The swarm of ``recipient`` over ``nodes`` (ids or Members), uncached."""
    return Placement(nodes, k=k, cache_size=1).swarm(recipient)
