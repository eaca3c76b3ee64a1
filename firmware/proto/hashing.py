"""Message hashes and the bytes a recipient signs (docs/protocol.md, "Common fields", "Signatures").

v2 signatures cover what the operation does, not only who asks: a private-namespace ``store``
signs the message hash, a ``delete`` the set of hashes, an ``expire`` the set and the new
expiry. Why: signed requests are forwarded to the other swarm members and a store's signature
travels with every copy of the message, so a node that relays one must not be able to reuse it
for other data (inject messages into a private namespace, delete a whole mailbox with the
signature of a one-message delete).

Pure functions over already-validated values; a wrong argument is a programming error and
raises ValueError/TypeError, never a ProtocolError.
"""

import hashlib
import struct

__all__ = ["message_hash", "hashes_digest", "op_binding", "signed_bytes", "sign_request",
           "SIGN_PREFIX"]  # fmt: skip

SIGN_PREFIX = b"homenode/v2/"
_NS_TS = struct.Struct(">hq")  # i16be(ns) || i64be(ts)
_I64 = struct.Struct(">q")
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


def hashes_digest(hashes):
    """BLAKE2b-256 of the distinct hashes, sorted, concatenated: order and repeats do not count."""
    return _blake2b(b"".join(sorted(set(hashes))), digest_size=32).digest()


def op_binding(op, *, msg_hash=None, hashes=None, expiry=None):
    """The op-specific tail of the signed bytes: ``store`` -> the message hash (ns != 0 only),
    ``delete`` -> hashes_digest, ``expire`` -> hashes_digest || i64be(expiry), else nothing."""
    if op == "store":
        if type(msg_hash) is not bytes or len(msg_hash) != 32:
            raise ValueError("a store signature covers the message hash: pass msg_hash")
        return msg_hash
    if op == "delete":
        if hashes is None:
            raise ValueError("a delete signature covers its hashes: pass hashes")
        return hashes_digest(hashes)
    if op == "expire":
        if hashes is None or type(expiry) is not int:
            raise ValueError("an expire signature covers its hashes and expiry: pass both")
        return hashes_digest(hashes) + _I64.pack(expiry)
    return b""


def signed_bytes(op, recipient, ns, sig_ts, binding=b""):
    """What ``sig`` signs: b"homenode/v2/" + op + b"\\x00" + recipient + i16be(ns) +
    i64be(sig_ts) + ``binding`` (``op_binding``)."""
    _check_key(recipient)
    return b"".join((SIGN_PREFIX, op.encode(), b"\x00", recipient, _NS_TS.pack(ns, sig_ts),
                     binding))  # fmt: skip


def sign_request(signing_key, op, recipient, ns, sig_ts, *, msg_hash=None, hashes=None,
                 expiry=None):  # fmt: skip
    """Client helper: the 64-byte ``sig`` for a request, by a ``nacl.signing.SigningKey``.
    ``store`` needs ``msg_hash``, ``delete`` ``hashes``, ``expire`` ``hashes`` and ``expiry``."""
    binding = op_binding(op, msg_hash=msg_hash, hashes=hashes, expiry=expiry)
    return signing_key.sign(signed_bytes(op, recipient, ns, sig_ts, binding)).signature
