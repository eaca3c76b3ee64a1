"""Messages between swarm members as they travel: copies with their owners' proofs, batches
that fit a frame, and the per-bucket digests anti-entropy compares (pure helpers of
firmware/net/replication.py; the checks themselves are firmware/proto/copies.py)."""

import hashlib

from firmware.proto import copies
from firmware.proto.limits import PUBLIC_NS
from firmware.store import Message

__all__ = ["MAX_BATCH_BYTES", "bucket_of", "bucket_digests", "message_wire", "message_of",
           "batches"]

MAX_BATCH_BYTES = 800_000  # data per replicate/fetch frame (frames are at most 1 MiB)


def bucket_of(recipient):
    return recipient[0]


def bucket_digests(index):
    """{bucket: set(hashes)} -> {bucket: BLAKE2b-128 of the sorted hashes}."""
    return {b: hashlib.blake2b(b"".join(sorted(hs)), digest_size=16).digest()
            for b, hs in index.items() if hs}  # fmt: skip


def message_wire(m):
    """A stored Message as a copy on the wire, or None for a private one without its owner's
    proof (stored before proofs were kept): every peer would refuse it, so it is not sent."""
    if m.ns != PUBLIC_NS and not m.proof:
        return None
    return copies.copy_wire(m)


def message_of(c):
    """A checked copy (copies.Copy) -> the store's Message, proof kept (None in ns 0)."""
    return Message(c.hash, c.recipient, c.ns, c.ts, c.expiry, c.data, c.proof or None)


def batches(msgs):
    out, size = [], 0
    for m in msgs:
        if out and size + len(m.data) > MAX_BATCH_BYTES:
            yield out
            out, size = [], 0
        out.append(m)
        size += len(m.data) + 200
    if out:
        yield out
