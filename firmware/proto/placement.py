"""Rendezvous (highest-random-weight) placement: which k live nodes hold a recipient's mail.

Every node computes the same answer from the same live set, with no coordination:

    weight(node, recipient) = first 8 bytes, big-endian, of BLAKE2b-64(node_id || recipient)
    swarm(recipient)        = the k live nodes of highest weight (ties: larger node id first)

``node_id || recipient`` is exactly 64 bytes, one BLAKE2b block. One node joining takes a slot in
a given swarm with probability k/(N+1) and then displaces exactly one member, so ~1/N of all
replica slots move per join or leave (bench/placement.py measures it).

A cold pick hashes every live node. Each node's BLAKE2b state with its id already absorbed is
kept, so a pick only copies it and adds the recipient (about 1.8x faster than hashing the
concatenation: ~2 ms instead of ~3.5 ms for 10,000 nodes on the dev machine). Swarms are cached
per recipient and the whole cache is dropped whenever the live set changes (``update``); the
cache is bounded (oldest entries go first) so a stream of one-off recipients cannot grow it.
"""

import hashlib
import heapq

__all__ = ["DEFAULT_K", "weight", "rank", "Placement"]

DEFAULT_K = 5
_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes


def weight(node_id, recipient):
    """The rendezvous weight of ``node_id`` for ``recipient`` (an int below 2**64)."""
    return _from_bytes(_blake2b(node_id + recipient, digest_size=8).digest(), "big")


def rank(node_ids, recipient, k):
    """The ``k`` node ids of highest weight for ``recipient``, best first (uncached)."""
    scored = [(_blake2b(n + recipient, digest_size=8).digest(), n) for n in node_ids]
    return tuple(n for _, n in heapq.nlargest(k, scored))


class Placement:
    """Swarms over one live set, cached until the live set changes."""

    def __init__(self, node_ids=(), *, k=DEFAULT_K, cache_size=65536):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.k = k
        self.cache_size = cache_size
        self.epoch = 0  # bumped on every live-set change; callers use it to spot stale work
        self.hits = 0
        self.misses = 0
        self._nodes = frozenset()
        self._ids = []  # same order as _states
        self._states = []  # BLAKE2b-64 state with the node id absorbed, per live node
        self._cache = {}
        self.update(node_ids)

    @property
    def nodes(self):
        """The live node ids placement is computed over (a frozenset)."""
        return self._nodes

    def update(self, node_ids):
        """Set the live set; drops the cache (and bumps ``epoch``) only if it really changed."""
        nodes = frozenset(node_ids)
        for n in nodes:
            if type(n) is not bytes or len(n) != 32:
                raise ValueError("node ids must be 32-byte keys")
        if nodes == self._nodes:
            return False
        old = dict(zip(self._ids, self._states, strict=True))
        self._nodes = nodes
        self._ids = sorted(nodes)
        self._states = [old.get(n) or _blake2b(n, digest_size=8) for n in self._ids]
        self._cache = {}
        self.epoch += 1
        return True

    def swarm(self, recipient):
        """The tuple of up to k node ids holding ``recipient``'s messages, best first."""
        cache = self._cache
        hit = cache.get(recipient)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        if type(recipient) is not bytes or len(recipient) != 32:
            raise ValueError("recipient must be a 32-byte key")
        digests = []
        add = digests.append
        for state in self._states:
            h = state.copy()
            h.update(recipient)
            add(h.digest())
        result = tuple(n for _, n in heapq.nlargest(self.k, zip(digests, self._ids, strict=True)))
        if len(cache) >= self.cache_size:
            del cache[next(iter(cache))]  # dicts keep insertion order: evict the oldest
        cache[recipient] = result
        return result

    def is_member(self, node_id, recipient):
        return node_id in self.swarm(recipient)
