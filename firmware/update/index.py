"""The release channel: a signed JSON index of versions and bundle URLs (pure: bytes in, choice out).

Why a signed index and not just signed bundles: the bundle signature (checked by RAUC) proves a
bundle is ours, but not that it is the newest; a mirror could keep serving an old index with an
old, vulnerable release. The index is signed with the same release key as the bundles (its
certificate is in the image's RAUC keyring), carries the time it was made, and a box refuses an
index older than one it has already accepted.

    index.json      {"format": 1, "compatible": "...", "generated": <unix seconds>,
                     "releases": [{"version": "0.2.0", "security": true, "url": "...raucb",
                                   "sha256": "<hex>", "size": <bytes>, "notes": "..."}]}
    index.json.sig  the release key's signature over the exact bytes of index.json
                    (`openssl dgst -sha256 -sign release.key.pem`; see README)
"""

import json
import re
import urllib.parse
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

FORMAT = 1
MAX_INDEX_BYTES = 1 << 20


class IndexProblem(ValueError):
    """The index is not usable; the message says why in one line."""


@dataclass(frozen=True)
class Release:
    version: str
    url: str
    sha256: str
    size: int
    security: bool
    notes: str = ""


@dataclass(frozen=True)
class Index:
    compatible: str
    generated: int
    releases: tuple[Release, ...]


def version_key(version: str) -> tuple[int, ...]:
    """Numeric parts of a version before any +build suffix: '0.10.2' > '0.9.12'."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+", 1)[0]))


def load_keyring(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise IndexProblem(f"the keyring holds no readable certificate: {e}") from None


def verify(data: bytes, signature: bytes, certs: list[x509.Certificate]) -> x509.Certificate:
    """The certificate whose key signed `data`; raises IndexProblem when none did."""
    for cert in certs:
        key = cert.public_key()
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, data)
            else:
                continue
            return cert
        except InvalidSignature:
            continue
    raise IndexProblem("the release index is not signed by a key this box trusts (wrong key, or "
                      "the index was changed after signing)")


def parse(data: bytes, compatible: str) -> Index:
    if len(data) > MAX_INDEX_BYTES:
        raise IndexProblem(f"the release index is {len(data)} bytes, more than the "
                          f"{MAX_INDEX_BYTES} allowed")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexProblem(f"the release index is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IndexProblem(f"the release index has format {doc.get('format') if isinstance(doc, dict) else None!r}; "
                          f"this box reads format {FORMAT} (update the box by hand)")
    if doc.get("compatible") != compatible:
        raise IndexProblem(f"the release index is for {doc.get('compatible')!r}, this box is "
                          f"{compatible!r}")
    generated = doc.get("generated")
    if not isinstance(generated, int) or isinstance(generated, bool):
        raise IndexProblem("the release index has no integer 'generated' time")
    releases = []
    for i, r in enumerate(doc.get("releases") or []):
        try:
            rel = Release(version=str(r["version"]), url=str(r["url"]),
                          sha256=str(r["sha256"]).lower(), size=int(r["size"]),
                          security=bool(r.get("security", False)), notes=str(r.get("notes", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise IndexProblem(f"release #{i + 1} in the index is incomplete ({e!r}): it needs "
                              "version, url, sha256 and size") from None
        if not re.fullmatch(r"[0-9a-f]{64}", rel.sha256) or rel.size <= 0 or not rel.url:
            raise IndexProblem(f"release {rel.version} in the index has a bad sha256, size or url")
        releases.append(rel)
    return Index(compatible, generated, tuple(releases))


def load(data: bytes, signature: bytes, keyring_pem: bytes, compatible: str,
         last_generated: int | None = None) -> Index:
    """Verify, parse and check freshness: the one entry point for a fetched index."""
    verify(data, signature, load_keyring(keyring_pem))
    index = parse(data, compatible)
    if last_generated is not None and index.generated < last_generated:
        raise IndexProblem(f"the release index is older ({index.generated}) than one this box "
                          f"already accepted ({last_generated}): refusing a replayed index")
    return index


def choose(index: Index, current: str, channel: str, declined=frozenset()) -> Release | None:
    """The release to install now, or None. `security`: only when a release newer than the
    running one carries a security fix, and then the newest (it includes the fix)."""
    if channel == "off":
        return None
    newer = [r for r in index.releases
             if version_key(r.version) > version_key(current) and r.sha256 not in declined]
    if not newer:
        return None
    if channel == "security" and not any(r.security for r in newer):
        return None
    return max(newer, key=lambda r: version_key(r.version))


def bundle_url(index_url: str, release: Release) -> str:
    return urllib.parse.urljoin(index_url, release.url)
