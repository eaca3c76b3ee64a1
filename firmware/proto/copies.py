"""Copies of a message between nodes (``replicate``, ``handoff``, ``fetch_missing``), v2.

Why a proof travels with each copy: a private namespace (ns != 0) only takes messages its owner
signed. The owner's ``store`` signature covers the message hash (firmware/proto/hashing.py), so
the node that took the store keeps it (``proof``, 72 bytes: ``i64be(sig_ts) || sig``) next to
the message and sends it with every copy; any member re-checks it on receipt with
:func:`verify_copy`. A copy without a valid proof is refused (and the I/O side charges the peer
that sent it). Namespace 0 stays public: no proof, and one there is refused as malformed.

The proof does not cover the expiry: the owner may move it later with ``expire`` (whose
signature is short-lived), so a copy's expiry is only held to ``ts < expiry <= ts + max ttl``;
``sig_ts`` is not checked for freshness either (it was, once, by the node that took the store;
the hash makes the proof good for this one message only). Re-sending a deleted message with its
old proof is stopped by tombstones, not by the proof.

Wire map of one copy::

    {"recipient": bytes32, "ns": int, "ts": int, "expiry": int, "data": bytes,
     "proof": bytes72 (ns != 0 only), "fresh": true (optional)}

Deletes travel the same way (op ``tombstones``): a swarm member that was off while the owner
deleted keeps its copy, so the members that hold the tombstone send it the owner's signed
delete again. The delete signature covers the digest of *all* hashes of that delete
(hashing.op_binding), so a tombstone is proved as a **group**: every tombstone kept with one
proof (``i64be(sig_ts) || sig`` of the delete, 72 bytes) is one delete, sent whole::

    {"recipient": bytes32, "ns": int, "hashes": [bytes32, 1..1000], "proof": bytes72}

and re-verified by the receiver (:func:`verify_delete`) with no age check on ``sig_ts``: it
can only ever delete exactly those hashes of that mailbox, which is what the owner asked for.
A group whose tombstones were partly swept (the oldest message of the delete outlived its max
ttl) or re-proved by a later delete of an overlapping set no longer verifies and is dropped.
"""

import struct
from dataclasses import dataclass

from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from .errors import BadRequest, BadSignature
from .hashing import message_hash, op_binding, signed_bytes
from .limits import (
    MAX_DATA,
    MAX_FUTURE_TS,
    MAX_HASHES,
    NS_MAX,
    NS_MIN,
    PUBLIC_NS,
    SIG_SIZE,
    max_ttl,
)

__all__ = ["PROOF_SIZE", "Copy", "store_proof", "verify_copy", "copy_wire", "parse_copy",
           "DeleteGroup", "delete_proof", "verify_delete", "delete_groups", "delete_wire",
           "parse_delete"]  # fmt: skip

_I64 = struct.Struct(">q")
PROOF_SIZE = 8 + SIG_SIZE
_KEYS = frozenset(("recipient", "ns", "ts", "expiry", "data", "proof", "fresh"))


@dataclass(frozen=True, slots=True)
class Copy:
    """One checked copy: the message, its owner's proof (b"" in ns 0) and the fresh flag."""

    hash: bytes
    recipient: bytes
    ns: int
    ts: int
    expiry: int
    data: bytes
    proof: bytes
    fresh: bool = False


def store_proof(sig_ts, sig):
    """The proof kept with a private-namespace message: the ``sig_ts`` and ``sig`` of its store
    (already checked by the node that took the store)."""
    if type(sig) is not bytes or len(sig) != SIG_SIZE:
        raise ValueError("sig must be 64 bytes")
    return _I64.pack(sig_ts) + sig


def verify_copy(recipient, ns, msg_hash, proof):
    """Raise BadSignature/BadRequest unless ``proof`` is the owner's store signature over
    ``msg_hash`` (ns != 0), or absent (ns 0). One Ed25519 verify (~60 us)."""
    if ns == PUBLIC_NS:
        if proof:
            raise BadRequest("a public-namespace (ns 0) copy carries no proof", field="proof")
        return
    if type(proof) is not bytes or len(proof) != PROOF_SIZE:
        raise BadSignature(f"a copy in namespace {ns} needs its owner's {PROOF_SIZE}-byte proof",
                           field="proof")  # fmt: skip
    (sig_ts,) = _I64.unpack_from(proof)
    msg = signed_bytes("store", recipient, ns, sig_ts, op_binding("store", msg_hash=msg_hash))
    try:
        crypto_sign_open(proof[8:] + msg, recipient)
    except (CryptoError, ValueError, TypeError):
        raise BadSignature(f"the proof of this namespace-{ns} copy is not its owner's signature "
                           "over the message hash", field="proof") from None  # fmt: skip


def copy_wire(c):
    """The wire map of a :class:`Copy` (or any object with its fields)."""
    m = {"recipient": c.recipient, "ns": c.ns, "ts": c.ts, "expiry": c.expiry, "data": c.data}
    if c.ns != PUBLIC_NS:
        m["proof"] = c.proof
    if getattr(c, "fresh", False):
        m["fresh"] = True
    return m


def parse_copy(item, now_ms):
    """A copy's wire map -> :class:`Copy` (None if already expired), checked like a store and
    proof verified; BadRequest/BadSignature naming the field otherwise."""
    if type(item) is not dict:
        raise BadRequest("each message must be a map", field="messages")
    if not item.keys() <= _KEYS:
        raise BadRequest(f"unknown key(s) in a copy: {sorted(map(str, item.keys() - _KEYS))}",
                         field="messages")  # fmt: skip
    r, ns, ts, exp, data = (item.get(k) for k in ("recipient", "ns", "ts", "expiry", "data"))
    if type(r) is not bytes or len(r) != 32:
        raise BadRequest("must be 32 bytes", field="recipient")
    if type(ns) is not int or not NS_MIN <= ns <= NS_MAX:
        raise BadRequest(f"must be an int in {NS_MIN}..{NS_MAX}", field="ns")
    if type(ts) is not int or not 0 <= ts <= now_ms + MAX_FUTURE_TS:
        raise BadRequest("must be ms since the epoch, at most 60 s ahead", field="ts")
    if type(exp) is not int or not ts < exp <= ts + max_ttl(ns):
        raise BadRequest("must be after ts and within the namespace's max ttl", field="expiry")
    if type(data) is not bytes or len(data) > MAX_DATA:
        raise BadRequest(f"must be bytes, at most {MAX_DATA}", field="data")
    fresh = item.get("fresh", False)
    if type(fresh) is not bool:
        raise BadRequest("must be true or false", field="fresh")
    proof = item.get("proof", b"")
    h = message_hash(r, ns, ts, data)
    verify_copy(r, ns, h, proof)
    if exp <= now_ms:
        return None
    return Copy(h, r, ns, ts, exp, data, proof, fresh)


# -- deletes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeleteGroup:
    """One owner-signed delete: the mailbox, every hash it named, and its proof."""

    recipient: bytes
    ns: int
    hashes: tuple
    proof: bytes


def delete_proof(sig_ts, sig):
    """The proof kept with the tombstones of a delete: its ``sig_ts`` and ``sig``."""
    return store_proof(sig_ts, sig)


def verify_delete(recipient, ns, hashes, proof):
    """Raise BadSignature unless ``proof`` is the owner's delete signature over exactly the set
    ``hashes`` (any order). One Ed25519 verify."""
    if type(proof) is not bytes or len(proof) != PROOF_SIZE:
        raise BadSignature(f"a delete's proof is {PROOF_SIZE} bytes", field="proof")
    (sig_ts,) = _I64.unpack_from(proof)
    msg = signed_bytes("delete", recipient, ns, sig_ts, op_binding("delete", hashes=hashes))
    try:
        crypto_sign_open(proof[8:] + msg, recipient)
    except (CryptoError, ValueError, TypeError):
        raise BadSignature("this delete's proof is not its owner's signature over these hashes",
                           field="proof") from None  # fmt: skip


def delete_groups(tombstones):
    """Tombstones (anything with hash, recipient, ns, proof) -> DeleteGroups, one per proof.
    Tombstones without a proof (made before proofs were kept) cannot be shown to anyone."""
    groups = {}
    for t in tombstones:
        if t.proof and len(t.proof) == PROOF_SIZE:
            groups.setdefault((t.recipient, t.ns, t.proof), []).append(t.hash)
    return [DeleteGroup(r, ns, tuple(sorted(set(hs))), proof)
            for (r, ns, proof), hs in groups.items()]  # fmt: skip


def delete_wire(g):
    return {"recipient": g.recipient, "ns": g.ns, "hashes": list(g.hashes), "proof": g.proof}


def parse_delete(item):
    """A delete group's wire map -> DeleteGroup (shape only; :func:`verify_delete` next)."""
    if type(item) is not dict or set(item) != {"recipient", "ns", "hashes", "proof"}:
        raise BadRequest("each delete is a map {recipient, ns, hashes, proof}", field="deletes")
    r, ns, hashes, proof = item["recipient"], item["ns"], item["hashes"], item["proof"]
    if type(r) is not bytes or len(r) != 32:
        raise BadRequest("must be 32 bytes", field="recipient")
    if type(ns) is not int or not NS_MIN <= ns <= NS_MAX:
        raise BadRequest(f"must be an int in {NS_MIN}..{NS_MAX}", field="ns")
    if (type(hashes) is not list or not 1 <= len(hashes) <= MAX_HASHES
            or any(type(h) is not bytes or len(h) != 32 for h in hashes)):  # fmt: skip
        raise BadRequest(f"must be 1..{MAX_HASHES} 32-byte hashes", field="hashes")
    if type(proof) is not bytes or len(proof) != PROOF_SIZE:
        raise BadRequest(f"must be {PROOF_SIZE} bytes", field="proof")
    return DeleteGroup(r, ns, tuple(hashes), proof)
