"""Pure helpers of replication: copies on the wire, bucket digests, batching
(firmware/net/replica_wire.py; the checks themselves: firmware/proto/copies.py)."""

import hashlib

import pytest

from firmware.net.replica_wire import (
    MAX_BATCH_BYTES,
    batches,
    bucket_digests,
    bucket_of,
    message_of,
    message_wire,
)
from firmware.proto.copies import parse_copy
from firmware.proto.errors import BadRequest
from firmware.proto.hashing import message_hash
from firmware.proto.limits import DAY_MS
from firmware.store import Message

NOW = 1_800_000_000_000
R = b"\x42" * 32


def wire(**kw):
    m = {"recipient": R, "ns": 0, "ts": NOW - 1000, "expiry": NOW + 60_000, "data": b"x"}
    m.update(kw)
    return m


def parse_message(item, now):
    c = parse_copy(item, now)
    return None if c is None else message_of(c)


def test_a_copy_becomes_a_message_with_its_hash_recomputed():
    m = parse_message(wire(), NOW)
    assert m == Message(message_hash(R, 0, NOW - 1000, b"x"), R, 0, NOW - 1000, NOW + 60_000, b"x")
    assert message_wire(m) == wire()


def test_a_private_message_without_its_owners_proof_is_never_sent():
    """Kept from before proofs existed: every peer would refuse it (and charge us)."""
    m = Message(b"\x01" * 32, R, 5, NOW, NOW + 1, b"x", proof=None)
    assert message_wire(m) is None
    signed = Message(b"\x01" * 32, R, 5, NOW, NOW + 1, b"x", proof=b"p" * 72)
    assert message_wire(signed)["proof"] == b"p" * 72


def test_expired_messages_are_skipped_not_refused():
    assert parse_message(wire(expiry=NOW), NOW) is None


@pytest.mark.parametrize("change,field", [
    ({"recipient": b"x"}, "recipient"),
    ({"ns": 40000}, "ns"),
    ({"ns": True}, "ns"),
    ({"ts": NOW + 60_001}, "ts"),
    ({"ts": -1}, "ts"),
    ({"expiry": NOW - 1000}, "expiry"),  # not after ts
    ({"expiry": NOW - 1000 + 14 * DAY_MS + 1}, "expiry"),  # over ns 0's max ttl
    ({"data": "text"}, "data"),
    ({"data": b"x" * 76_801}, "data"),
])  # fmt: skip
def test_bad_replicated_messages(change, field):
    with pytest.raises(BadRequest) as info:
        parse_message(wire(**change), NOW)
    assert info.value.field == field


def test_longer_ttl_allowed_outside_the_public_namespace():
    with pytest.raises(BadRequest) as info:  # the expiry is fine; only the proof is missing
        parse_message(wire(ns=5, expiry=NOW - 1000 + 30 * DAY_MS), NOW)
    assert info.value.field == "proof"


def test_bucket_digests():
    h1, h2 = b"\x01" * 32, b"\x02" * 32
    a = bucket_digests({7: {h1, h2}, 9: set()})
    assert list(a) == [7]  # empty buckets are left out
    assert a[7] == hashlib.blake2b(h1 + h2, digest_size=16).digest()  # sorted: order-free
    assert bucket_digests({7: {h2, h1}}) == a
    assert bucket_digests({7: {h1}}) != a
    assert bucket_of(b"\xfe" + b"\x00" * 31) == 254


def test_batches_stay_under_the_frame_budget():
    big = [Message(bytes([i]) * 32, R, 0, NOW, NOW + 1, b"x" * 76_800) for i in range(25)]
    out = list(batches(big))
    assert [len(b) for b in out] == [10, 10, 5]
    assert all(sum(len(m.data) for m in b) <= MAX_BATCH_BYTES for b in out)
    assert sum(out, []) == big
    assert list(batches([])) == []
