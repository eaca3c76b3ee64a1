"""The node's TLS certificate and key in DER/PEM, built and read without `cryptography`.

Why by hand: the certificate is one fixed template (self-signed Ed25519, serial 1, CN
"homenode", valid 2020-01-01..9999-12-31, no extensions) around a public key and a signature,
and importing `cryptography` costs the daemon ~8 MiB of RSS (a quarter of its budget on a
Pi Zero). The bytes are identical to what `cryptography`'s CertificateBuilder produces for the
same key (tests/node/test_identity.py checks that), so the certificate stays a pure function of
the key.

Reading is a strict DER walk to tbsCertificate.subjectPublicKeyInfo - never a byte-pattern
search, which a crafted certificate could satisfy with a key hidden in another field.
"""

import base64

ED25519_OID = bytes.fromhex("06032b6570")  # OID 1.3.101.112
_ALG = bytes.fromhex("300506032b6570")  # AlgorithmIdentifier { id-Ed25519 }
_CN_OID = bytes.fromhex("0603550403")  # OID 2.5.4.3 (commonName)
_NOT_BEFORE = b"\x17\x0d" + b"200101000000Z"  # UTCTime
_NOT_AFTER = b"\x18\x0f" + b"99991231235959Z"  # GeneralizedTime
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


class CertError(ValueError):
    pass


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _name(common_name: str) -> bytes:
    atv = _seq(_CN_OID, _tlv(0x0C, common_name.encode()))
    return _seq(_tlv(0x31, atv))


def tbs_certificate(public_key: bytes, common_name: str = "homenode", serial: int = 1) -> bytes:
    """The to-be-signed part for `public_key` (32 raw bytes)."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    version = _tlv(0xA0, _tlv(0x02, b"\x02"))  # v3
    serial_der = _tlv(0x02, serial.to_bytes((serial.bit_length() + 8) // 8, "big"))
    name = _name(common_name)
    validity = _seq(_NOT_BEFORE, _NOT_AFTER)
    spki = _seq(_ALG, _tlv(0x03, b"\x00" + public_key))
    return _seq(version, serial_der, _ALG, name, validity, name, spki)


def certificate_der(tbs: bytes, signature: bytes) -> bytes:
    return _seq(tbs, _ALG, _tlv(0x03, b"\x00" + signature))


def pem(kind: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n").encode()


def private_key_pem(seed: bytes) -> bytes:
    """PKCS#8 PEM of an Ed25519 seed (what `ssl.SSLContext.load_cert_chain` reads)."""
    return pem("PRIVATE KEY", _PKCS8_PREFIX + seed)


# -- reading ----------------------------------------------------------------------------------


def _read(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, body start, body end) of the TLV at `pos`."""
    if pos + 2 > len(buf):
        raise CertError("truncated DER")
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first < 0x80:
        n = first
    else:
        k = first & 0x7F
        if k == 0 or k > 4 or pos + k > len(buf):
            raise CertError("bad DER length")
        n = int.from_bytes(buf[pos:pos + k], "big")
        pos += k
    if pos + n > len(buf):
        raise CertError("truncated DER")
    return tag, pos, pos + n


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, s, e = _read(buf, pos)
        if e > end:
            raise CertError("DER element overruns its parent")
        out.append((tag, s, e))
        pos = e
    return out


def ed25519_public_key(der: bytes) -> bytes:
    """The Ed25519 key in a certificate's subjectPublicKeyInfo; CertError if it has none."""
    tag, s, e = _read(der, 0)
    if tag != 0x30 or e != len(der):
        raise CertError("not a DER certificate")
    parts = _children(der, s, e)
    if len(parts) != 3 or parts[0][0] != 0x30:
        raise CertError("not a DER certificate")
    tbs = _children(der, parts[0][1], parts[0][2])
    if tbs and tbs[0][0] == 0xA0:  # explicit version
        tbs = tbs[1:]
    # serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    if len(tbs) < 6 or tbs[5][0] != 0x30:
        raise CertError("certificate has no subjectPublicKeyInfo")
    spki = _children(der, tbs[5][1], tbs[5][2])
    if len(spki) != 2 or spki[0][0] != 0x30 or spki[1][0] != 0x03:
        raise CertError("malformed subjectPublicKeyInfo")
    alg = _children(der, spki[0][1], spki[0][2])
    if len(alg) != 1 or alg[0][0] != 0x06 or der[alg[0][1]:alg[0][2]] != ED25519_OID[2:]:
        raise CertError("certificate key is not Ed25519")
    bits = der[spki[1][1]:spki[1][2]]
    if len(bits) != 33 or bits[0] != 0:
        raise CertError("malformed Ed25519 key")
    return bits[1:]
