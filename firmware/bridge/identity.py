"""A bridge's files in the node's data directory: its web certificate and key, and its secret.

    bridge.key     RSA key of the snakeoil-shaped certificate (0600)
    bridge.crt     the certificate; its SubjectPublicKeyInfo hash is the line's pin
    bridge.secret  32 random bytes as 64 hex characters (0600); the line's `s=`

Created on first use, never overwritten (a new key or secret invalidates every line handed
out; to revoke all lines, move the files away). The certificate's mtime doubles as the site's
"install time" (Last-Modified / ETag of the decoy page), as on a real server where the page is
copied at package install.
"""

import os
from dataclasses import dataclass

from firmware.bridge import auth, webcert
from firmware.bridge.line import BridgeLine, format_line

SECRET_FILE = "bridge.secret"


class BridgeIdentityError(Exception):
    """A bridge file is unsafe or corrupt; the message says how to fix it."""


@dataclass(frozen=True)
class BridgeIdentity:
    key_path: str
    cert_path: str
    pin: bytes
    secret: bytes
    installed_at: int  # seconds since the epoch

    def __repr__(self):
        return f"BridgeIdentity({self.cert_path!r}, pin={self.pin.hex()[:12]}...)"

    def line(self, host: str, port: int = 443) -> str:
        """The bridge line for clients that reach this bridge at host:port."""
        return format_line(BridgeLine(host, port, self.pin, self.secret))


def load_or_create(data_dir: str, host_name: str = webcert.DEFAULT_HOST_NAME) -> BridgeIdentity:
    """The bridge identity in `data_dir` (which must exist), created on first use."""
    try:
        key_path, cert_path = webcert.write_web_identity(data_dir, host_name)
    except FileExistsError as e:
        raise BridgeIdentityError(str(e)) from None
    return _load(data_dir, key_path, cert_path, create_secret=True)


def load_existing(data_dir: str) -> BridgeIdentity:
    """The bridge identity the node made in `data_dir`; BridgeIdentityError saying what to do
    when there is none yet or it cannot be read (the owner's tools never create one: files
    made by another user than the node's would lock the node out)."""
    key_path = os.path.join(data_dir, "bridge.key")
    cert_path = os.path.join(data_dir, "bridge.crt")
    missing = [p for p in (key_path, cert_path, os.path.join(data_dir, SECRET_FILE))
               if not os.path.exists(p)]
    if missing:
        raise BridgeIdentityError(f"no bridge identity in {data_dir} yet ({missing[0]} is "
                                  "missing): turn the bridge on ([bridge] enabled = true in "
                                  "homenode.toml) and start the node once")
    return _load(data_dir, key_path, cert_path, create_secret=False)


def _load(data_dir, key_path, cert_path, *, create_secret) -> BridgeIdentity:
    try:
        _check_private(key_path)
        secret_path = os.path.join(data_dir, SECRET_FILE)
        secret = (_load_or_create_secret(secret_path) if create_secret
                  else _read_secret(secret_path))
    except PermissionError as e:
        raise BridgeIdentityError(f"cannot read {e.filename} (permission denied): run this as "
                                  "the node's user (on the box: sudo -u homenode homenode ...) "
                                  "or as root") from None
    with open(cert_path, "rb") as f:
        try:
            pin = auth.pin_of_cert(webcert.pem_to_der(f.read()))
        except (auth.PinError, ValueError) as e:
            raise BridgeIdentityError(f"{cert_path} is not a readable certificate ({e}); move "
                                      "bridge.crt and bridge.key away to make a new bridge "
                                      "identity (old bridge lines stop working)") from None
    return BridgeIdentity(key_path, cert_path, pin, secret, int(os.stat(cert_path).st_mtime))


def _check_private(path: str) -> None:
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise BridgeIdentityError(f"{path} is readable by group or others (mode {mode:04o}); "
                                  f"fix with: chmod 600 {path}")


def _load_or_create_secret(path: str) -> bytes:
    if not os.path.exists(path):
        secret = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        return secret
    return _read_secret(path)


def _read_secret(path: str) -> bytes:
    _check_private(path)
    with open(path) as f:
        text = f.read(200).strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise BridgeIdentityError(f"{path} is corrupt (expected 64 hex characters); move it "
                                  "away to make a new secret (old bridge lines stop working)")
    return secret
