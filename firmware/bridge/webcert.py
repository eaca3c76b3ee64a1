"""The bridge's TLS identity: a certificate shaped exactly like Debian's "snakeoil" one.

Debian's ssl-cert package makes every fresh web server's default certificate with
`openssl req -config ssleay.cnf -new -x509 -days 3650 -nodes -sha256`: self-signed RSA 2048,
SHA-256 with RSA, a random 159-bit serial, subject = issuer = CN=<host name> (UTF8String),
UTCTime validity from now for 3650 days, and the extensions basicConstraints CA:FALSE,
subjectAltName DNS:<host name>, subjectKeyIdentifier (SHA-1 of the key), in that order, none
critical. `web_certificate` builds that shape (tests/bridge/test_vs_nginx.py compares it
field by field against one made by that very command), so nothing in it says "homenode".

The key pair is the bridge's own, unrelated to the node id: clients pin its SubjectPublicKeyInfo
(see `auth.pin_of_cert`), and public node records never mention it.

`cryptography` is imported only here, when a certificate is made (once per bridge): the running
server only loads the PEM files into `ssl`.
"""

import datetime
import os

DEFAULT_HOST_NAME = "raspberrypi"  # the name a Raspberry Pi comes with: a large crowd
VALIDITY_DAYS = 3650


def web_certificate(host_name: str = DEFAULT_HOST_NAME, *,
                    now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for a new RSA 2048 key, snakeoil-shaped."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    if not host_name or len(host_name) > 64:
        raise ValueError("the certificate's host name must be 1..64 characters")
    now = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(20), "big") >> 1)  # 159 bits, as openssl
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host_name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def write_web_identity(directory: str, host_name: str = DEFAULT_HOST_NAME) -> tuple[str, str]:
    """Create `bridge.key` (0600) and `bridge.crt` in `directory` unless both exist; return
    their paths. Never overwrites: a new key changes the pin every handed-out line carries."""
    key_path = os.path.join(directory, "bridge.key")
    cert_path = os.path.join(directory, "bridge.crt")
    if os.path.exists(key_path) and os.path.exists(cert_path):
        return key_path, cert_path
    if os.path.exists(key_path) or os.path.exists(cert_path):
        raise FileExistsError(f"only one of {key_path} and {cert_path} exists; move the other "
                              "away to make a new bridge identity (old bridge lines stop working)")
    key_pem, cert_pem = web_certificate(host_name)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
        f.flush()
        os.fsync(f.fileno())
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
        f.flush()
        os.fsync(f.fileno())
    return key_path, cert_path


def pem_to_der(pem: bytes) -> bytes:
    import base64
    lines = [x for x in pem.decode("ascii").splitlines() if x and not x.startswith("-----")]
    return base64.b64decode("".join(lines))
