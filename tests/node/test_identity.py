"""Identity files: created 0600 and atomically, refused when unsafe or corrupt; derived keys."""

import os
import stat

import nacl.public
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from firmware import tlscert
from firmware.identity import (
    Identity,
    IdentityError,
    load_key_file,
    load_or_create_node_identity,
    parse_node_id,
    public_key_of_cert,
    write_key_file,
    x25519_public_of,
)


def test_first_start_creates_a_0600_key_and_reuses_it(tmp_path):
    data = tmp_path / "data"
    ident, created = load_or_create_node_identity(str(data))
    assert created
    key = data / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert sorted(p.name for p in data.iterdir()) == ["node.id", "node.key"]  # no temp files
    assert (data / "node.id").read_text().splitlines()[-1] == ident.id_hex
    again, created = load_or_create_node_identity(str(data))
    assert not created and again.node_id == ident.node_id
    assert ident.id_hex in key.read_text() and len(key.read_text().splitlines()) == 2


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_key_is_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / "node.key"
    write_key_file(str(path), Identity.generate())
    os.chmod(path, mode)
    with pytest.raises(IdentityError) as e:
        load_key_file(str(path))
    assert f"mode {mode:04o}" in str(e.value) and f"chmod 600 {path}" in str(e.value)


def _corrupt(text):
    head, seed = text.splitlines()
    flipped = format(int(seed[0], 16) ^ 1, "x") + seed[1:]
    return {
        "empty": "",
        "garbage": "\x00\x01 binary junk",
        "truncated": text[: len(text) // 2],
        "not hex": head + "\n" + "zz" * 32 + "\n",
        "short seed": head + "\n" + seed[:40] + "\n",
        "flipped bit": head + "\n" + flipped + "\n",
        "no header": seed + "\n",
    }


@pytest.mark.parametrize("case", ["empty", "garbage", "truncated", "not hex", "short seed",
                                  "flipped bit", "no header"])
def test_corrupt_key_is_refused_with_how_to_fix(tmp_path, case):
    path = tmp_path / "node.key"
    ident = Identity.generate()
    content = _corrupt(ident.file_text())[case]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content.encode("latin-1"))
    os.close(fd)
    with pytest.raises(IdentityError) as e:
        load_key_file(str(path))
    msg = str(e.value)
    assert str(path) in msg and ("corrupt" in msg or "unreadable" in msg)
    assert "backup" in msg and f"mv {path} {path}.broken" in msg


def test_node_refuses_to_create_over_corrupt_key(tmp_path):
    (tmp_path / "node.key").write_text("junk")
    os.chmod(tmp_path / "node.key", 0o600)
    with pytest.raises(IdentityError):
        load_or_create_node_identity(str(tmp_path))
    assert (tmp_path / "node.key").read_text() == "junk"  # never silently replaced


def test_write_refuses_to_overwrite(tmp_path):
    path = str(tmp_path / "k")
    first = Identity.generate()
    write_key_file(path, first)
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        write_key_file(path, Identity.generate())
    assert load_key_file(path).node_id == first.node_id


def test_certificate_is_a_pure_function_of_the_key():
    seed = bytes(range(32))
    a, b = Identity(seed), Identity(seed)
    assert a.tls_cert_pem() == b.tls_cert_pem()
    assert a.tls_cert_pem() != Identity(bytes(32)).tls_cert_pem()
    cert = x509.load_pem_x509_certificate(a.tls_cert_pem())
    assert public_key_of_cert(cert.public_bytes(Encoding.DER)) == a.node_id
    assert cert.serial_number == 1 and cert.issuer == cert.subject
    assert cert.not_valid_before_utc.year == 2020 and cert.not_valid_after_utc.year == 9999


def _reference_cert(seed: bytes) -> bytes:
    """What `cryptography`'s CertificateBuilder makes for the same template (PEM)."""
    import datetime

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.x509.oid import NameOID

    key = Ed25519PrivateKey.from_private_bytes(seed)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homenode")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
            .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC))
            .sign(key, None))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("seed", [bytes(32), bytes(range(32)), b"\xff" * 32])
def test_hand_built_certificate_and_key_match_cryptography(seed):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ident = Identity(seed)
    assert ident.tls_cert_pem() == _reference_cert(seed)
    ref_key = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    assert ident.tls_key_pem() == ref_key


def test_pin_reads_the_real_key_field_not_a_lookalike():
    """A certificate with the victim's key hidden in its subject name and the attacker's key in
    subjectPublicKeyInfo must pin to the attacker's key."""
    victim, attacker = Identity.generate(), Identity.generate()
    spki_lookalike = bytes.fromhex("302a300506032b6570032100") + victim.node_id
    t = tlscert
    name = t._seq(t._tlv(0x31, t._seq(t._CN_OID, t._tlv(0x04, spki_lookalike))))
    tbs = t._seq(t._tlv(0xA0, t._tlv(0x02, b"\x02")), t._tlv(0x02, b"\x01"), t._ALG, name,
                 t._seq(t._NOT_BEFORE, t._NOT_AFTER), name,
                 t._seq(t._ALG, t._tlv(0x03, b"\x00" + attacker.node_id)))
    der = t.certificate_der(tbs, attacker.sign(tbs))
    assert der.index(spki_lookalike) < der.index(attacker.node_id)  # the decoy comes first
    assert spki_lookalike in der
    assert public_key_of_cert(der) == attacker.node_id


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x82\xff\xff", b"\x04\x00",
                                 b"\x30\x03\x02\x01\x01", bytes(200)])
def test_garbage_certificates_are_refused(der):
    with pytest.raises(IdentityError):
        public_key_of_cert(der)


def test_x25519_twin_opens_what_is_sealed_to_the_node_id():
    ident = Identity.generate()
    assert ident.x25519_public == x25519_public_of(ident.node_id)
    sealed = nacl.public.SealedBox(nacl.public.PublicKey(ident.x25519_public)).encrypt(b"hi")
    opened = nacl.public.SealedBox(nacl.public.PrivateKey(ident.x25519_private)).decrypt(sealed)
    assert opened == b"hi"


def test_repr_and_ids_never_show_the_secret():
    ident = Identity(b"\x07" * 32)
    assert (b"\x07" * 32).hex() not in repr(ident)
    assert parse_node_id(ident.id_hex.upper()) == ident.node_id
    with pytest.raises(ValueError, match="64 hex"):
        parse_node_id("abc")


def test_store_record_guards_the_key(tmp_path):
    """node.id remembers the store's node: a swapped or missing key is refused, unless the new
    identity is accepted on purpose; a damaged record is refused too, and rewritten on purpose."""
    data = str(tmp_path / "d")
    first, _ = load_or_create_node_identity(data)
    os.unlink(tmp_path / "d" / "node.key")
    with pytest.raises(IdentityError, match="is missing, but the store in .* belongs to node"):
        load_or_create_node_identity(data)
    second, created = load_or_create_node_identity(data, new_identity=True)
    assert created and second.node_id != first.node_id
    assert load_or_create_node_identity(data)[0].node_id == second.node_id
    (tmp_path / "d" / "node.id").write_text("garbage\n")
    with pytest.raises(IdentityError, match="node.id is corrupt"):
        load_or_create_node_identity(data)
    again, created = load_or_create_node_identity(data, new_identity=True)
    assert not created and again.node_id == second.node_id
    assert (tmp_path / "d" / "node.id").read_text().splitlines()[-1] == second.id_hex


def test_write_key_file_into_a_missing_directory_names_it(tmp_path):
    with pytest.raises(IdentityError, match=r"directory .*/nope does not exist; create it first"):
        write_key_file(str(tmp_path / "nope" / "me.key"), Identity.generate())
