"""Node and user identities: an Ed25519 key on disk, its X25519 twin, and the TLS certificate.

The node id IS the Ed25519 public key, so everything else (the X25519 key that opens onion layers,
the TLS certificate clients pin) is derived from the one secret file. The certificate is a pure
function of the key (fixed serial, validity and name; Ed25519 signatures are deterministic), so it
never needs storing and two starts always present the same bytes.

Key file format (text, so an operator can inspect it without tools)::

    # homenode Ed25519 secret key - keep private. public id: <64 hex>
    <64 hex: the 32-byte seed>

The public id in the comment is checked against the seed on load, which catches a flipped bit.

Next to the store the data dir records whose store it is (`node.id`: a comment line, then the
64-hex node id), so a lost or swapped `node.key` is refused instead of silently becoming a new
node that peers who pinned the old id can no longer reach.
"""

import os
import stat

import nacl.bindings
import nacl.signing

from firmware import fsaccess, tlscert
from firmware.durable import write_durably

NODE_KEY_FILE = "node.key"
STORE_OWNER_FILE = "node.id"  # which node the store in this data dir belongs to
_HEADER = "# homenode Ed25519 secret key - keep private. public id: "


class IdentityError(Exception):
    """A key file is missing, unsafe or corrupt; the message says how to fix it."""


class Identity:
    """An Ed25519 signing key with its derived forms. `node_id` is the raw 32-byte public key."""

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self.__seed = bytes(seed)
        self._signing = nacl.signing.SigningKey(seed)
        self.node_id = bytes(self._signing.verify_key)

    @classmethod
    def generate(cls) -> "Identity":
        return cls(os.urandom(32))

    @property
    def id_hex(self) -> str:
        return self.node_id.hex()

    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature."""
        return self._signing.sign(message).signature

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return self._signing

    @property
    def x25519_private(self) -> bytes:
        """X25519 twin of the secret key (decrypts onion layers and sealed boxes)."""
        return bytes(self._signing.to_curve25519_private_key())

    @property
    def x25519_public(self) -> bytes:
        return x25519_public_of(self.node_id)

    def _seed(self) -> bytes:
        return self.__seed

    def file_text(self) -> str:
        return f"{_HEADER}{self.id_hex}\n{self._seed().hex()}\n"

    def tls_cert_pem(self) -> bytes:
        """Self-signed certificate for this key; byte-identical on every call (see tlscert)."""
        tbs = tlscert.tbs_certificate(self.node_id)
        return tlscert.pem("CERTIFICATE", tlscert.certificate_der(tbs, self.sign(tbs)))

    def tls_key_pem(self) -> bytes:
        return tlscert.private_key_pem(self.__seed)

    def __repr__(self):  # never show key material
        return f"Identity(node_id={self.id_hex[:16]}...)"


def x25519_public_of(ed25519_public: bytes) -> bytes:
    """The X25519 public key twin of an Ed25519 public key (a node id or recipient)."""
    return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public)


def public_key_of_cert(der: bytes) -> bytes:
    """Raw Ed25519 public key of a DER certificate; raises IdentityError if it is not Ed25519."""
    try:
        return tlscert.ed25519_public_key(der)
    except tlscert.CertError as e:
        raise IdentityError(f"peer certificate: {e}") from None


def parse_node_id(text: str) -> bytes:
    """A node id / recipient given as 64 hex characters; ValueError with a clear message."""
    text = text.strip().lower()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{text[:80]!r} is not a public id: expected 64 hex characters")
    return raw


def load_key_file(path: str) -> Identity:
    """Load a key file, refusing unsafe permissions and corrupt content."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise IdentityError(
            f"key file {path} does not exist; create one with: homenode keygen --out {path}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise IdentityError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise IdentityError(
            f"key file {path} is readable by group or others (mode {mode:04o}); the secret key "
            f"may have leaked. Fix with: chmod 600 {path}"
        )
    try:
        with open(path, encoding="ascii") as f:
            text = f.read(4096)
    except (OSError, UnicodeDecodeError) as e:
        raise IdentityError(f"key file {path} unreadable ({e}); {_corrupt_hint(path)}") from None
    lines = text.splitlines()
    if len(lines) != 2 or not lines[0].startswith(_HEADER):
        raise IdentityError(f"key file {path} is corrupt (unexpected layout); {_corrupt_hint(path)}")
    try:
        seed = bytes.fromhex(lines[1].strip())
        claimed = bytes.fromhex(lines[0][len(_HEADER):].strip())
    except ValueError:
        raise IdentityError(f"key file {path} is corrupt (not hex); {_corrupt_hint(path)}") from None
    if len(seed) != 32:
        raise IdentityError(f"key file {path} is corrupt (seed length); {_corrupt_hint(path)}")
    ident = Identity(seed)
    if ident.node_id != claimed:
        raise IdentityError(
            f"key file {path} is corrupt (secret does not match its public id); "
            f"{_corrupt_hint(path)}"
        )
    return ident


def _corrupt_hint(path: str) -> str:
    return (
        f"restore it from a backup, or move it away to create a NEW identity "
        f"(mv {path} {path}.broken); a new identity loses the old node id"
    )


def write_key_file(path: str, ident: Identity) -> None:
    """Create `path` (mode 0600) durably: temp file, fsync, link, fsync of the directory.

    Refuses to overwrite an existing file: losing a key loses an identity.
    """
    if os.path.lexists(path):
        raise IdentityError(f"{path} already exists; refusing to overwrite a key")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise IdentityError(f"cannot write the key file {path}: directory {directory} does not "
                            f"exist; create it first (mkdir -p {directory}) or choose another "
                            "path")
    try:
        write_durably(path, ident.file_text(), 0o600, exclusive=True)
    except FileExistsError:
        raise IdentityError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as e:
        raise IdentityError(f"cannot write the key file {path}: {e.strerror or e} (in "
                            f"{directory})") from None


def ensure_data_dir(data_dir: str) -> None:
    """Create the data directory (mode 0700) if missing, and check that this process can use it
    and everything in it, before anything else touches it.

    Why here: a directory or file this user cannot write otherwise surfaces much later, as
    SQLite's "unable to open database file" (which reads like corruption) or a bare
    "Permission denied". A permission, read-only-mount or missing-path problem is named as such,
    with its fix, and the data is left alone.
    """
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
    except OSError as e:
        why = fsaccess.directory_problem(data_dir)
        raise IdentityError(why or f"cannot create data directory {data_dir}: {e.strerror}"
                            ) from None
    why = fsaccess.directory_problem(data_dir) or fsaccess.foreign_entries_problem(data_dir)
    if why:
        raise IdentityError(why)


def load_or_create_node_identity(data_dir: str, *, new_identity: bool = False
                                 ) -> tuple[Identity, bool]:
    """The node's identity from `data_dir`, created on first start. Returns (identity, created).

    The data dir remembers which node its store belongs to (`node.id`, written durably at
    first start). A missing `node.key` next to an existing store, or a key of another node,
    is refused (IdentityError saying what to do) unless `new_identity`: then the key present
    (or a new one) becomes this store's node on purpose.
    """
    ensure_data_dir(data_dir)
    path = os.path.join(data_dir, NODE_KEY_FILE)
    try:
        owner = read_store_owner(data_dir)
    except IdentityError:
        if not new_identity:
            raise
        owner = None  # a damaged record is rewritten below, on purpose
    if os.path.lexists(path):
        ident = load_key_file(path)
        if owner is not None and owner != ident.node_id and not new_identity:
            raise IdentityError(
                f"{path} is node {ident.id_hex[:16]}..., but the store in {data_dir} belongs to "
                f"node {owner.hex()[:16]}...; put that node's key back (homenode identity "
                f"import BACKUP), or start with `homenode run --new-identity` to make "
                f"{ident.id_hex[:16]}... this store's node on purpose (peers that pinned the "
                "old id will no longer reach it)")
        if owner != ident.node_id:  # first start after an upgrade, or accepted on purpose
            write_store_owner(data_dir, ident)
        return ident, False
    # imported here: the client library imports this module and must not load the store
    from firmware.store import DB_FILENAME

    if (owner is not None or os.path.exists(os.path.join(data_dir, DB_FILENAME))) \
            and not new_identity:
        whose = f" belongs to node {owner.hex()[:16]}..." if owner else " has messages"
        raise IdentityError(
            f"{path} is missing, but the store in {data_dir}{whose}; restore the key "
            f"(homenode identity import BACKUP, or copy node.key back with mode 0600), or "
            "start with `homenode run --new-identity` to give this store a new node id on "
            "purpose (peers that pinned the old id will no longer reach it)")
    ident = Identity.generate()
    write_key_file(path, ident)
    write_store_owner(data_dir, ident)
    return ident, True


_OWNER_HEADER = "# the node whose message store this directory holds (written at first start)"


def read_store_owner(data_dir: str) -> bytes | None:
    """The node id recorded in `<data_dir>/node.id`, or None when there is none yet."""
    path = os.path.join(data_dir, STORE_OWNER_FILE)
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read(4096).splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise IdentityError(f"cannot read {path} ({e}); it records which node the store "
                            "belongs to") from None
    try:
        return parse_node_id(lines[-1])
    except (ValueError, IndexError):
        raise IdentityError(
            f"{path} is corrupt (it records which node the store belongs to); if node.key is "
            "the right key, start with `homenode run --new-identity` to record it again"
        ) from None


def write_store_owner(data_dir: str, ident: Identity) -> None:
    path = os.path.join(data_dir, STORE_OWNER_FILE)
    try:
        write_durably(path, f"{_OWNER_HEADER}\n{ident.id_hex}\n", 0o644)
    except OSError as e:
        raise IdentityError(f"cannot write {path}: {e.strerror or e}") from None


def node_key_path(data_dir: str) -> str:
    return os.path.join(data_dir, NODE_KEY_FILE)


# -- the id's proof of work (firmware/proto/pow.py), kept next to the key -----------------------

ID_WORK_FILE = "node.pow"
_WORK_HEADER = "# homenode id proof of work (public; made once per key). id: "


def load_id_work(data_dir: str, node_id: bytes) -> bytes | None:
    """The proof of work saved for `node_id`, or None (none yet, another key's, or unreadable:
    the node makes a new one, which costs time and loses nothing)."""
    try:
        with open(os.path.join(data_dir, ID_WORK_FILE), encoding="ascii") as f:
            lines = f.read(1024).splitlines()
        if len(lines) == 2 and lines[0] == _WORK_HEADER + node_id.hex():
            return bytes.fromhex(lines[1].strip())
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return None


def save_id_work(data_dir: str, node_id: bytes, nonce: bytes) -> None:
    """Write the proof durably (it took a minute to make; a power cut must not lose it)."""
    write_durably(os.path.join(data_dir, ID_WORK_FILE),
                  f"{_WORK_HEADER}{node_id.hex()}\n{nonce.hex()}\n", 0o644)
