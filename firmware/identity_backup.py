"""A node or user key as a passphrase-encrypted backup file (pure: bytes and text in and out).

Why: a lost `node.key` is a lost node id, and peers pin ids. The backup must be safe to keep
anywhere (a USB stick, a cloud drive), so the secret is encrypted with a key stretched from a
passphrase by Argon2id (memory-hard: guessing costs the attacker 256 MiB per try) and sealed
with XSalsa20-Poly1305 (PyNaCl's SecretBox), which also detects a wrong passphrase or any
change to the file.

File format, version 1: one JSON object (UTF-8), every byte string in lower-case hex::

    {"format": "homenode-identity-backup", "version": 1,
     "node_id": "<64 hex: the Ed25519 public key, readable without the passphrase>",
     "kdf": {"name": "argon2id13", "opslimit": 3, "memlimit": 268435456, "salt": "<32 hex>"},
     "cipher": "xsalsa20poly1305", "nonce": "<48 hex>",
     "ciphertext": "<96 hex: SecretBox(key, nonce) over the 32-byte Ed25519 seed>"}

key = Argon2id v1.3 (passphrase as UTF-8, salt, opslimit, memlimit) -> 32 bytes. On import the
seed must reproduce `node_id`. A reader refuses other `format`s and `version`s, and KDF limits
above MAX_MEMLIMIT / MAX_OPSLIMIT (a crafted file must not make it allocate gigabytes).
"""

import json
import os

import nacl.exceptions
import nacl.pwhash
import nacl.secret

from firmware.identity import Identity

__all__ = ["BackupError", "WrongPassphrase", "export_text", "import_text", "FORMAT", "VERSION"]

FORMAT = "homenode-identity-backup"
VERSION = 1
KDF_NAME = "argon2id13"
CIPHER = "xsalsa20poly1305"
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE  # 3 passes
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE  # 256 MiB
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 1 << 30
MIN_PASSPHRASE = 8


class BackupError(ValueError):
    """The file is not a backup this version can read, or was changed; the message says which."""


class WrongPassphrase(BackupError):
    pass


def _key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt,
                                    opslimit=opslimit, memlimit=memlimit)


def export_text(ident: Identity, passphrase: str, *, opslimit: int = OPSLIMIT,
                memlimit: int = MEMLIMIT) -> str:
    """The backup file's text for `ident`, encrypted with `passphrase`."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase is {len(passphrase)} characters; use at least "
                          f"{MIN_PASSPHRASE} (a few words are easy to remember and hard to guess)")
    salt = os.urandom(nacl.pwhash.argon2id.SALTBYTES)
    nonce = os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_key(passphrase, salt, opslimit, memlimit))
    sealed = box.encrypt(ident._seed(), nonce).ciphertext
    doc = {"format": FORMAT, "version": VERSION, "node_id": ident.id_hex,
           "kdf": {"name": KDF_NAME, "opslimit": opslimit, "memlimit": memlimit,
                   "salt": salt.hex()},
           "cipher": CIPHER, "nonce": nonce.hex(), "ciphertext": sealed.hex()}
    return json.dumps(doc, indent=1) + "\n"


def backup_node_id(text: str) -> bytes:
    """The public node id a backup holds (no passphrase needed)."""
    return _parse(text)[0]


def import_text(text: str, passphrase: str) -> Identity:
    """The identity in a backup; WrongPassphrase, or BackupError for a file it cannot read."""
    node_id, salt, ops, mem, nonce, sealed = _parse(text)
    box = nacl.secret.SecretBox(_key(passphrase, salt, ops, mem))
    try:
        seed = box.decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase("wrong passphrase (or the file was changed)") from None
    ident = Identity(seed)
    if ident.node_id != node_id:
        raise BackupError("the file was changed: its key does not match the node id it names")
    return ident


def _parse(text: str):
    try:
        doc = json.loads(text)
    except ValueError:
        raise BackupError(f"not a {FORMAT} file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"not a {FORMAT} file")
    if doc.get("version") != VERSION:
        raise BackupError(f"backup version {doc.get('version')!r} is not supported (this "
                          f"homenode reads version {VERSION}); use a newer homenode")
    try:
        kdf = doc["kdf"]
        if kdf["name"] != KDF_NAME or doc["cipher"] != CIPHER:
            raise BackupError(f"unsupported algorithms {kdf['name']!r} / {doc['cipher']!r}")
        ops, mem = kdf["opslimit"], kdf["memlimit"]
        if not (type(ops) is int and type(mem) is int
                and nacl.pwhash.argon2id.OPSLIMIT_MIN <= ops <= MAX_OPSLIMIT
                and nacl.pwhash.argon2id.MEMLIMIT_MIN <= mem <= MAX_MEMLIMIT):
            raise BackupError(f"key-stretching limits out of range (opslimit {ops!r}, memlimit "
                              f"{mem!r}; at most {MAX_OPSLIMIT} and {MAX_MEMLIMIT})")
        node_id = bytes.fromhex(doc["node_id"])
        salt = bytes.fromhex(kdf["salt"])
        nonce = bytes.fromhex(doc["nonce"])
        sealed = bytes.fromhex(doc["ciphertext"])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, BackupError):
            raise
        raise BackupError(f"damaged {FORMAT} file (field {e} missing or not hex)") from None
    if (len(node_id), len(salt), len(nonce)) != (32, nacl.pwhash.argon2id.SALTBYTES,
                                                 nacl.secret.SecretBox.NONCE_SIZE) \
            or len(sealed) != 32 + nacl.secret.SecretBox.MACBYTES:
        raise BackupError(f"damaged {FORMAT} file (a field has the wrong length)")
    return node_id, salt, ops, mem, nonce, sealed
