"""The client's proof that it holds the bridge secret, bound to one TLS session; and the pin.

Channel binding: Python's `ssl` (3.11, OpenSSL 3.0) offers exactly one binding,
`get_channel_binding("tls-unique")`, and no keying-material exporter (RFC 9266's tls-exporter).
On a TLS 1.3 connection OpenSSL returns the client's Finished message for it at both ends: a MAC,
under a key derived from the (EC)DHE secret, over the hash of the whole handshake transcript (both
randoms, both key shares, the server certificate). So it is unique per connection, equal at both
ends, and never on the wire in clear (TLS 1.3 encrypts Finished). RFC 8446 leaves tls-unique
undefined for 1.3 because of TLS 1.2's triple-handshake history; that attack needs a session a
client resumes on a server it did not authenticate, which our pinned client never does. We use it
on TLS 1.3 only: a TLS 1.2 session can never authenticate (the server then always serves the
decoy), so no downgrade can weaken it.

Authenticator: BLAKE2b-128 keyed by a key derived from the secret, over (binding, pin). It is
sent as the `Sec-WebSocket-Key` of an ordinary WebSocket upgrade (a 16-byte random-looking value,
exactly what that header carries anyway), so the request has no unusual header at all. An
observer cannot read it (inside TLS); whoever did get to read one (a TLS-terminating middlebox, a
leaked capture with keys) cannot reuse it: any other session has another binding.
"""

import base64
import hashlib
import hmac

AUTH_PERSON = b"hn-bridge-auth-1"  # 16 bytes: BLAKE2b personalisation, domain separation
KEY_PERSON = b"hn-bridge-key--1"


class PinError(ValueError):
    """A certificate that cannot be pinned (not DER, no SubjectPublicKeyInfo)."""


def auth_key(secret: bytes) -> bytes:
    """The MAC key for authenticators, derived once from the 32-byte bridge secret."""
    return hashlib.blake2b(b"websocket-upgrade", key=secret, digest_size=32,
                           person=KEY_PERSON).digest()


def authenticator(key: bytes, binding: bytes, pin: bytes) -> bytes:
    """16 bytes proving `key` for the TLS session whose tls-unique binding is `binding`."""
    if not binding:
        raise ValueError("no channel binding: the authenticator needs a TLS 1.3 session")
    mac = hashlib.blake2b(key=key, digest_size=16, person=AUTH_PERSON)
    mac.update(len(binding).to_bytes(2, "big") + binding + pin)
    return mac.digest()


def websocket_key(key: bytes, binding: bytes, pin: bytes) -> str:
    """The authenticator in the form of a `Sec-WebSocket-Key` header value (base64, 24 chars)."""
    return base64.b64encode(authenticator(key, binding, pin)).decode("ascii")


def check_websocket_key(expected: bytes | None, header_value: bytes | None) -> bool:
    """Constant-time check of a received `Sec-WebSocket-Key` against the expected authenticator
    (`None` when this session cannot authenticate, e.g. TLS 1.2). Always does the same work, so
    the answer to a probe takes the same time whether or not it tried to authenticate."""
    want = base64.b64encode(expected) if expected is not None else b"\x00" * 24
    got = (header_value or b"").strip()
    return hmac.compare_digest(want, got) and expected is not None


# -- pin: SHA-256 of the certificate's SubjectPublicKeyInfo ----------------------------------


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, body start, body end) of the DER element at `pos`, within `end`."""
    if pos + 2 > end:
        raise PinError("truncated DER")
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first < 0x80:
        n = first
    else:
        k = first & 0x7F
        if not 1 <= k <= 3 or pos + k > end:
            raise PinError("bad DER length")
        n = int.from_bytes(buf[pos:pos + k], "big")
        pos += k
    if pos + n > end:
        raise PinError("truncated DER")
    return tag, pos, pos + n


def spki_of_cert(der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER certificate (a strict walk, never a search)."""
    tag, s, e = _tlv(der, 0, len(der))
    if tag != 0x30 or e != len(der):
        raise PinError("not a DER certificate")
    tag, s, e = _tlv(der, s, e)  # tbsCertificate
    if tag != 0x30:
        raise PinError("not a DER certificate")
    pos = s
    t, _, nxt = _tlv(der, pos, e)
    if t == 0xA0:  # explicit version
        pos = nxt
    for _ in range(5):  # serial, signature, issuer, validity, subject
        _, _, pos = _tlv(der, pos, e)
    t, _, spki_end = _tlv(der, pos, e)
    if t != 0x30:
        raise PinError("certificate has no SubjectPublicKeyInfo")
    return der[pos:spki_end]


def pin_of_cert(der: bytes) -> bytes:
    return hashlib.sha256(spki_of_cert(der)).digest()
