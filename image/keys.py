"""Signing keys for bundles and the release index: the release key (a maintainer's, never in the
repository) and the TEST key (made on the build machine, trusted only by test images).

Why a separate test key: CI and developers must be able to build, sign and install bundles
without the release key, and an image that trusts the test key must never be mistaken for a
release: such images say so in their name, release.json and build report. The test key lives in
the image cache (machine-local), not in the repository and not in dist/.

The maintainer's release key (see README, "Cutting a release"):
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\
        -keyout release.key.pem -out release.cert.pem -days 7300 \\
        -subj "/O=homenode/CN=homenode release signing"
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SigningKey:
    cert: Path  # X.509 certificate (PEM): goes into the image's RAUC keyring
    key: Path | None  # private key (PEM), None when the build cannot sign
    test: bool  # the TEST key: not for release


def make_key(key: Path, cert: Path, subject: str, days: int = 7300) -> None:
    """A self-signed ECDSA P-256 key and certificate (what RAUC and the index verify with)."""
    key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", str(days), "-subj", subject],
                   check=True, capture_output=True)
    key.chmod(0o600)


def test_key(cache: Path) -> SigningKey:
    """The build machine's test key, made once and kept in the image cache."""
    d = cache / "test-keys"
    key, cert = d / "test.key.pem", d / "test.cert.pem"
    if not (key.exists() and cert.exists()):
        make_key(key, cert, "/O=homenode/CN=homenode TEST key - not for release")
    return SigningKey(cert, key, test=True)


def release_key(cert: Path, key: Path | None) -> SigningKey:
    if not cert.exists():
        raise SystemExit(f"image: release certificate {cert} not found")
    if key is not None and not key.exists():
        raise SystemExit(f"image: release key {key} not found")
    return SigningKey(cert, key, test=False)


def sign_file(path: Path, key: Path) -> Path:
    """Detached signature `path`.sig (ECDSA/RSA over SHA-256, DER), as the box verifies it."""
    sig = path.with_name(path.name + ".sig")
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key), "-out", str(sig),
                    str(path)], check=True, capture_output=True)
    return sig
