"""Message hash and signed bytes against values computed here straight from hashlib / the spec."""

import hashlib

import nacl.signing
import pytest

from firmware.proto import message_hash, sign_request, signed_bytes

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
        b"homenode/v1/retrieve\x00" + RCPT + b"\xff\xfe" + b"\x00\x00\x01\x8b\xcf\xe5\x68\x00"
    )
    assert signed_bytes("retrieve", RCPT, -2, 1_700_000_000_000) == expected


def test_sign_request_verifies_with_recipient_key():
    key = nacl.signing.SigningKey(b"\x07" * 32)
    rcpt = bytes(key.verify_key)
    sig = sign_request(key, "delete", rcpt, 3, 123)
    assert len(sig) == 64
    key.verify_key.verify(signed_bytes("delete", rcpt, 3, 123), sig)


@pytest.mark.parametrize("recipient", [b"\x00" * 31, "x" * 32, bytearray(32)])
def test_bad_recipient_is_a_programming_error(recipient):
    with pytest.raises(ValueError):
        message_hash(recipient, 0, 0, b"")
    with pytest.raises(ValueError):
        signed_bytes("store", recipient, 0, 0)
