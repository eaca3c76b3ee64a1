"""Message hash and signed bytes against values computed here straight from hashlib / the spec."""

import hashlib

import nacl.signing
import pytest

from firmware.proto import message_hash, sign_request, signed_bytes
from firmware.proto.hashing import hashes_digest, op_binding

RCPT = bytes(range(32))


def reference_hash(recipient, ns, ts, data):
    """docs/protocol.md: BLAKE2b-256(recipient || i16be(ns) || i64be(ts) || data)."""
    blob = recipient + ns.to_bytes(2, "big", signed=True) + ts.to_bytes(8, "big", signed=True)
    return hashlib.blake2b(blob + data, digest_size=32).digest()


@pytest.mark.parametrize(
    "ns, ts, data",
    [
        (0, 0, b""),
        (-2, 1_700_000_000_000, b"hello"),
        (-32768, 2**63 - 1, b"\xff" * 76_800),
        (32767, 1, bytes(range(256))),
    ],
)
def test_message_hash_matches_reference(ns, ts, data):
    assert message_hash(RCPT, ns, ts, data) == reference_hash(RCPT, ns, ts, data)


def test_message_hash_known_answers():
    # hex values computed once with hashlib.blake2b(..., digest_size=32) over the spelled-out bytes
    assert message_hash(RCPT, -2, 1_700_000_000_000, b"hello").hex() == (
        "06e346d2f0db330eefd16ddb620ddee8f8571b65b1dd2978e3fa6177da9898c8"
    )
    assert message_hash(b"\x00" * 32, 0, 0, b"").hex() == (
        "6a4ee7c567c3fd65be9c84dba9b589724fc210b3134dc676d8cffc171ffa55a3"
    )


def test_message_hash_separates_fields():
    base = message_hash(RCPT, 1, 2, b"x")
    assert len({base, message_hash(RCPT, 1, 3, b"x"), message_hash(RCPT, 2, 2, b"x"),
                message_hash(RCPT, 1, 2, b"y"), message_hash(bytes(32), 1, 2, b"x")}) == 5  # fmt: skip


def test_signed_bytes_layout():
    expected = (
        b"homenode/v2/retrieve\x00" + RCPT + b"\xff\xfe" + b"\x00\x00\x01\x8b\xcf\xe5\x68\x00"
    )
    assert signed_bytes("retrieve", RCPT, -2, 1_700_000_000_000) == expected


H1, H2, H3 = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32


@pytest.mark.parametrize("op, bound, tail", [
    ("retrieve", {}, b""),
    ("store", {"msg_hash": H1}, H1),
    # delete/expire: BLAKE2b-256 of the distinct hashes, sorted, concatenated (+ i64be(expiry))
    ("delete", {"hashes": [H2, H1, H2]}, hashlib.blake2b(H1 + H2, digest_size=32).digest()),
    ("expire", {"hashes": [H3, H1], "expiry": 5},
     hashlib.blake2b(H1 + H3, digest_size=32).digest() + b"\x00" * 7 + b"\x05"),
])  # fmt: skip
def test_v2_signature_covers_what_the_op_does(op, bound, tail):
    assert op_binding(op, **bound) == tail
    key = nacl.signing.SigningKey(b"\x07" * 32)
    rcpt = bytes(key.verify_key)
    sig = sign_request(key, op, rcpt, 3, 123, **bound)
    key.verify_key.verify(b"homenode/v2/" + op.encode() + b"\x00" + rcpt + b"\x00\x03"
                          + (123).to_bytes(8, "big") + tail, sig)  # fmt: skip


def test_bindings_are_required_where_the_op_changes_data():
    key = nacl.signing.SigningKey(b"\x07" * 32)
    for op, bound in (("store", {}), ("delete", {}), ("expire", {"hashes": [H1]}),
                      ("store", {"msg_hash": b"short"})):  # fmt: skip
        with pytest.raises(ValueError):
            sign_request(key, op, bytes(key.verify_key), 1, 1, **bound)


def test_a_delete_signature_cannot_be_reused_for_other_hashes():
    """The v1 hole: a swarm member that relayed a one-message delete could replay its signature
    within 60 s to delete everything else in the mailbox on the other members."""
    assert hashes_digest([H1]) != hashes_digest([H1, H2])
    assert hashes_digest([H2, H1]) == hashes_digest([H1, H2, H1])  # order and repeats don't count


@pytest.mark.parametrize("recipient", [b"\x00" * 31, "x" * 32, bytearray(32)])
def test_bad_recipient_is_a_programming_error(recipient):
    with pytest.raises(ValueError):
        message_hash(recipient, 0, 0, b"")
    with pytest.raises(ValueError):
        signed_bytes("store", recipient, 0, 0)
