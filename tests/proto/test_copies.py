"""Copies between nodes (firmware/proto/copies.py): the owner's proof travels with every
private-namespace copy and any member checks it; namespace 0 stays public."""

import nacl.signing
import pytest

from firmware.proto.copies import PROOF_SIZE, Copy, copy_wire, parse_copy, store_proof, verify_copy
from firmware.proto.errors import BadRequest, BadSignature
from firmware.proto.hashing import message_hash, sign_request

NOW = 1_800_000_000_000
DAY = 86_400_000
OWNER = nacl.signing.SigningKey(b"\x05" * 32)
MALLORY = nacl.signing.SigningKey(b"\x06" * 32)
RCPT = bytes(OWNER.verify_key)


def signed_copy(ns=3, data=b"secret", key=OWNER, ts=NOW, sig_ts=NOW + 7, **changes):
    h = message_hash(RCPT, ns, ts, data)
    sig = sign_request(key, "store", RCPT, ns, sig_ts, msg_hash=h)
    item = {"recipient": RCPT, "ns": ns, "ts": ts, "expiry": ts + DAY, "data": data,
            "proof": store_proof(sig_ts, sig)}  # fmt: skip
    item.update(changes)
    return item


def test_a_signed_private_copy_is_accepted_with_its_proof():
    c = parse_copy(signed_copy(), NOW)
    assert c == Copy(message_hash(RCPT, 3, NOW, b"secret"), RCPT, 3, NOW, NOW + DAY, b"secret",
                     signed_copy()["proof"])  # fmt: skip
    assert len(c.proof) == PROOF_SIZE == 72
    assert copy_wire(c) == signed_copy()  # round trip: the proof goes out with the copy
    assert copy_wire(Copy(c.hash, RCPT, 0, NOW, NOW + DAY, b"x", b"", True)) == {
        "recipient": RCPT, "ns": 0, "ts": NOW, "expiry": NOW + DAY, "data": b"x", "fresh": True}


@pytest.mark.parametrize("what, item, error, field", [
    ("no proof (v1 injection)", {k: v for k, v in signed_copy().items() if k != "proof"},
     BadSignature, "proof"),
    ("signed by someone else", signed_copy(key=MALLORY), BadSignature, "proof"),
    ("payload swapped under the owner's proof",
     signed_copy(data=b"injected") | {"proof": signed_copy()["proof"]}, BadSignature, "proof"),
    ("moved to another namespace", signed_copy(ns=4) | {"proof": signed_copy()["proof"]},
     BadSignature, "proof"),
    ("proof cut short", signed_copy(proof=signed_copy()["proof"][:-1]), BadSignature, "proof"),
    ("proof on a public copy", signed_copy(ns=0), BadRequest, "proof"),
    ("unknown key", signed_copy(extra=1), BadRequest, "messages"),
    ("fresh not a bool", signed_copy(fresh=1), BadRequest, "fresh"),
    ("expiry past the max ttl", signed_copy(expiry=NOW + 31 * DAY), BadRequest, "expiry"),
])  # fmt: skip
def test_unsigned_or_mis_signed_copies_are_refused(what, item, error, field):
    with pytest.raises(error) as e:
        parse_copy(item, NOW)
    assert e.value.field == field, what


def test_public_copies_need_no_proof_and_expired_ones_are_skipped():
    pub = {"recipient": RCPT, "ns": 0, "ts": NOW, "expiry": NOW + DAY, "data": b"hi"}
    assert parse_copy(pub, NOW).proof == b""
    assert parse_copy(signed_copy(), NOW + DAY) is None  # expired: nothing to store
    verify_copy(RCPT, 0, message_hash(RCPT, 0, NOW, b"hi"), b"")


def test_the_proof_does_not_cover_the_expiry():
    """The owner may move the expiry later with `expire`; copies with another expiry still
    verify (held to ts < expiry <= ts + max ttl)."""
    assert parse_copy(signed_copy(expiry=NOW + 20 * DAY), NOW).expiry == NOW + 20 * DAY
