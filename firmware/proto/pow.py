"""Identity proof of work: a node id is admitted only with a nonce that took work to find.

Why: an id is an Ed25519 key anyone makes in ~40 us, so without a price an attacker can make
millions of them and keep the ones that rank where it wants (docs/protocol.md, "Placement").
The price is paid once per id, at first boot, and checked by everyone with one hash.

    work(node_id, nonce) = u64be(BLAKE2b-64(b"homenode/v2/pow\\x00" || node_id || nonce))
    valid at ``bits``   <=> work < 2**(64 - bits)     (``bits`` leading zero bits)

``nonce`` is the 8-byte big-endian counter the solver stopped at (0..16 bytes accepted, so a
solver may use any encoding; ``b""`` is a valid proof only at 0 bits). The prefix keeps this
hash apart from every other BLAKE2b use; the id inside binds the proof to the key, so a proof
cannot be reused for another id. A proof at ``bits`` also satisfies every lower difficulty.

Cost (bench/pow.py prints the measured figures and the arithmetic): expected hashes are
``2**bits``; the solver below does ~3.2e6 hashes/s on one core of the dev machine (CPython),
and a Pi Zero 2 W core is taken as 10x slower, so at the network default ``DEFAULT_BITS = 24``
a Pi makes its identity in ~54 s on average (geometric: 5 % of boots take over 3x that).
Verifying is one hash: about 0.5 us. The time is random, not the work: ``solve`` reports
progress against the expected count, never promises an end.
"""

import hashlib
import struct

__all__ = ["DEFAULT_BITS", "MAX_BITS", "MAX_NONCE", "PowError", "work", "verify", "search",
           "solve", "expected_hashes"]  # fmt: skip

DEFAULT_BITS = 24  # the network default: ~1 minute on a Pi Zero 2 W (see module doc)
MAX_BITS = 48
MAX_NONCE = 16  # bytes
POW_PREFIX = b"homenode/v2/pow\x00"
_pack = struct.Struct(">Q").pack
_blake2b = hashlib.blake2b


class PowError(ValueError):
    """A proof that does not meet the difficulty (or is not a proof at all)."""


def _check(node_id, bits):
    if type(node_id) is not bytes or len(node_id) != 32:
        raise ValueError("node_id must be 32 bytes")
    if type(bits) is not int or not 0 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an int 0..{MAX_BITS}, got {bits!r}")


def _target(bits):
    """The bound as 8 big-endian bytes: digests compare as bytes, no int per hash (bits >= 1)."""
    return (1 << (64 - bits)).to_bytes(8, "big")


def work(node_id, nonce):
    """The 64-bit work value of ``nonce`` for ``node_id`` (lower is more work)."""
    return int.from_bytes(_blake2b(POW_PREFIX + node_id + nonce, digest_size=8).digest(), "big")


def expected_hashes(bits):
    return 1 << bits


def verify(node_id, nonce, bits):
    """Raise PowError unless ``nonce`` is a proof of ``bits`` bits of work for ``node_id``."""
    _check(node_id, bits)
    if type(nonce) is not bytes or len(nonce) > MAX_NONCE:
        raise PowError(f"the proof must be at most {MAX_NONCE} bytes")
    if bits == 0:
        return
    if work(node_id, nonce) >= 1 << (64 - bits):
        raise PowError(f"the proof of work is below the network's {bits} bits; the node must "
                       "make its identity again with the current difficulty")  # fmt: skip


def search(node_id, bits, start, count):
    """Try nonces ``start .. start + count - 1``; the 8-byte nonce found, or None.

    The unit of work for callers that run the search in slices (a thread with a cancel check
    between slices, several processes with disjoint ranges)."""
    _check(node_id, bits)
    if bits == 0:
        return _pack(start)
    target = _target(bits)
    copy = _blake2b(POW_PREFIX + node_id, digest_size=8).copy
    pack = _pack
    for n in range(start, start + count):
        h = copy()
        h.update(pack(n))
        if h.digest() < target:
            return pack(n)
    return None


def solve(node_id, bits, *, start=0, slice_size=1 << 16, progress=None):
    """Find a proof for ``node_id``; returns the nonce (8 bytes).

    ``progress(done, expected)`` is called after every slice of ``slice_size`` hashes; when it
    returns False the search stops and ``solve`` returns None (a first boot shows "booting:
    making identity" from it and stops on shutdown). ``start`` resumes an interrupted search.
    """
    expected = expected_hashes(bits)
    n = start
    while True:
        found = search(node_id, bits, n, slice_size)
        if found is not None:
            return found
        n += slice_size
        if progress is not None and progress(n - start, expected) is False:
            return None
