"""End-to-end encryption for messages: a node only ever stores ciphertext.

`seal_for` is NaCl's SealedBox (an anonymous sender's ephemeral X25519 key + XSalsa20-Poly1305)
to the X25519 twin of the recipient's Ed25519 id, so a recipient needs one key pair for
everything: its id is where mail goes, and the same secret opens it.
"""

import nacl.public
import nacl.signing

from firmware.identity import x25519_public_of

__all__ = ["seal_for", "open_sealed", "SEAL_OVERHEAD"]

SEAL_OVERHEAD = 48  # ephemeral public key (32) + Poly1305 tag (16)


def seal_for(recipient: bytes, plaintext: bytes) -> bytes:
    """Encrypt to the holder of the Ed25519 key `recipient` (anonymous sender)."""
    box = nacl.public.SealedBox(nacl.public.PublicKey(x25519_public_of(recipient)))
    return box.encrypt(plaintext)


def open_sealed(signing_key: nacl.signing.SigningKey, ciphertext: bytes) -> bytes:
    """Decrypt a `seal_for` ciphertext with the recipient's Ed25519 key; nacl CryptoError if not
    for us or tampered with."""
    return nacl.public.SealedBox(signing_key.to_curve25519_private_key()).decrypt(ciphertext)
