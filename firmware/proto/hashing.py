"""Message hashes and the bytes a recipient signs (docs/protocol.md, "Common fields", "Signatures").

Pure functions over already-validated values; a wrong argument is a programming error and
raises ValueError/TypeError, never a ProtocolError.
"""

import hashlib
import struct

__all__ = ["message_hash", "signed_bytes", "sign_request", "SIGN_PREFIX"]

SIGN_PREFIX = b"homenode/v1/"
_NS_TS = struct.Struct(">hq")  # i16be(ns) || i64be(ts)
_blake2b = hashlib.blake2b


def _check_key(recipient):
    if type(recipient) is not bytes or len(recipient) != 32:
        raise ValueError("recipient must be 32 bytes (an Ed25519 public key)")


def message_hash(recipient, ns, ts, data):
    """BLAKE2b-256(recipient || i16be(ns) || i64be(ts) || data): a message's id and dedup key."""
    _check_key(recipient)
    h = _blake2b(recipient, digest_size=32)
    h.update(_NS_TS.pack(ns, ts))
    h.update(data)
    return h.digest()


def signed_bytes(op, recipient, ns, sig_ts):
    """What ``sig`` signs: b"homenode/v1/" + op + b"\\x00" + recipient + i16be(ns) + i64be(sig_ts)."""
    _check_key(recipient)
    return b"".join((SIGN_PREFIX, op.encode(), b"\x00", recipient, _NS_TS.pack(ns, sig_ts)))


def sign_request(signing_key, op, recipient, ns, sig_ts):
    """Client helper: the 64-byte ``sig`` for a request, by a ``nacl.signing.SigningKey``."""
    return signing_key.sign(signed_bytes(op, recipient, ns, sig_ts)).signature
