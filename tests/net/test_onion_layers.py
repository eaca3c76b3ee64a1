"""firmware.proto.onion: exact build/peel results and the one uniform rejection (h11 style)."""

import hashlib
import random

import cbor2
import nacl.bindings as sodium
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from firmware.proto import onion
from firmware.proto.errors import Busy
from firmware.proto.onion import (
    MAX_HOPS,
    Hop,
    HopFailed,
    NextHop,
    OnionRejected,
    OnionResponseError,
    ReplayCache,
)

NOW = 1_790_000_000_000


class Node:
    """A hop's key material, derived like the daemon does: Ed25519 seed -> X25519 twin."""

    def __init__(self, seed_byte, port):
        pk, sk = sodium.crypto_sign_seed_keypair(bytes([seed_byte]) * 32)
        self.node_id = pk
        self.x_secret = sodium.crypto_sign_ed25519_sk_to_curve25519(sk)
        self.x_pub = sodium.crypto_sign_ed25519_pk_to_curve25519(pk)
        self.hop = Hop(pk, "127.0.0.1", port)
        self.replay = ReplayCache()

    def peel(self, blob, position, now=NOW):
        return onion.peel(
            blob, self.x_secret, self.x_pub, now_ms=now, position=position, replay=self.replay
        )


def rng(seed=7):
    return random.Random(seed).randbytes


@pytest.fixture
def nodes():
    return [Node(i + 1, 7000 + i) for i in range(MAX_HOPS + 2)]


REQUEST = cbor2.dumps({"v": 1, "id": 0, "op": "info", "args": {}})


def _hchacha20(key, nonce16):
    """HChaCha20 (draft-irtf-cfrg-xchacha) in plain Python: an independent cross-check."""
    import struct

    def rotl(v, c):
        return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))

    def qr(s, a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF
        s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF
        s[b] = rotl(s[b] ^ s[c], 7)

    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        qr(s, 0, 4, 8, 12), qr(s, 1, 5, 9, 13), qr(s, 2, 6, 10, 14), qr(s, 3, 7, 11, 15)
        qr(s, 0, 5, 10, 15), qr(s, 1, 6, 11, 12), qr(s, 2, 7, 8, 13), qr(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def _xchacha_open(key, nonce, aad, ct):
    """XChaCha20-Poly1305 open from the spec (HChaCha20 + `cryptography` ChaCha20-Poly1305)."""
    return ChaCha20Poly1305(_hchacha20(key, nonce[:16])).decrypt(b"\0" * 4 + nonce[16:], ct, aad)


def test_layer_key_matches_an_independent_derivation(nodes):
    hop = nodes[0]
    eph = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    eph_pub = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(hop.x_pub))
    expected = hashlib.blake2b(shared + eph_pub + hop.x_pub, digest_size=32,
                               person=b"homenode-onion-1").digest()
    blob, key = onion.seal_layer(hop.x_pub, bytes(range(32)), b"\x05" * 24, b"hello")
    assert key == expected
    assert blob[:1] == b"\x01" and blob[1:33] == eph_pub and blob[33:57] == b"\x05" * 24
    assert _xchacha_open(key, b"\x05" * 24, blob[:33], blob[57:]) == b"hello"
    assert len(blob) == onion.LAYER_OVERHEAD + len(b"hello")


def test_three_hop_build_then_peel_gives_exact_layers(nodes):
    a, b, c = nodes[:3]
    blob, keys = onion.build_onion([a.hop, b.hop, c.hop], REQUEST, NOW, rng())
    assert len(keys) == 3 and len(set(keys)) == 3

    p0 = a.peel(blob, 0)
    assert p0 == onion.Peeled(NextHop(b.node_id, "127.0.0.1", 7001), p0.inner, NOW, keys[0])
    p1 = b.peel(p0.inner, 1)
    assert p1 == onion.Peeled(NextHop(c.node_id, "127.0.0.1", 7002), p1.inner, NOW, keys[1])
    p2 = c.peel(p1.inner, 2)
    assert p2 == onion.Peeled(None, REQUEST, NOW, keys[2])
    assert p2.is_final and not p0.is_final
    # each layer is exactly one layer's overhead plus its CBOR plaintext
    assert len(blob) == onion.LAYER_OVERHEAD + len(
        cbor2.dumps({"next": p0.next_hop.to_cbor(), "inner": p0.inner, "ts": NOW}))


def test_build_is_deterministic_given_randomness(nodes):
    path = [n.hop for n in nodes[:3]]
    assert onion.build_onion(path, REQUEST, NOW, rng(1)) == onion.build_onion(path, REQUEST, NOW, rng(1))
    assert onion.build_onion(path, REQUEST, NOW, rng(1))[0] != onion.build_onion(path, REQUEST, NOW, rng(2))[0]


def test_response_round_trip_through_three_hops(nodes):
    a, b, c = nodes[:3]
    blob, keys = onion.build_onion([a.hop, b.hop, c.hop], REQUEST, NOW, rng())
    p0 = a.peel(blob, 0)
    p1 = b.peel(p0.inner, 1)
    p2 = c.peel(p1.inner, 2)
    answer = {"ok": {"node_id": c.node_id, "time": NOW}}
    r = onion.seal_response(p2.key, b"\x01" * 24, onion.TAG_FINAL, cbor2.dumps(answer))
    r = onion.seal_response(p1.key, b"\x02" * 24, onion.TAG_CARRIED, r)
    r = onion.seal_response(p0.key, b"\x03" * 24, onion.TAG_CARRIED, r)
    assert onion.unwrap_response(keys, r) == answer


def test_hop_failure_names_the_hop(nodes):
    a, b, c = nodes[:3]
    blob, keys = onion.build_onion([a.hop, b.hop, c.hop], REQUEST, NOW, rng())
    p0 = a.peel(blob, 0)
    p1 = b.peel(p0.inner, 1)
    fail = cbor2.dumps({"code": "unreachable", "msg": "connect refused"})
    r = onion.seal_response(p1.key, b"\x02" * 24, onion.TAG_HOP_FAILED, fail)
    r = onion.seal_response(p0.key, b"\x03" * 24, onion.TAG_CARRIED, r)
    with pytest.raises(HopFailed) as e:
        onion.unwrap_response(keys, r)
    assert e.value.index == 1 and e.value.next_code == "unreachable"


def test_tampered_response_is_detected(nodes):
    a, b = nodes[:2]
    blob, keys = onion.build_onion([a.hop, b.hop], REQUEST, NOW, rng())
    p0 = a.peel(blob, 0)
    p1 = b.peel(p0.inner, 1)
    r = onion.seal_response(p1.key, b"\x02" * 24, onion.TAG_FINAL, cbor2.dumps({"ok": {}}))
    r = onion.seal_response(p0.key, b"\x03" * 24, onion.TAG_CARRIED, r)
    bad = r[:-1] + bytes([r[-1] ^ 1])
    with pytest.raises(OnionResponseError):
        onion.unwrap_response(keys, bad)
    with pytest.raises(OnionResponseError):
        onion.unwrap_response(keys, r[:30])
    # a middle hop pretending to be final is caught
    early = onion.seal_response(p0.key, b"\x03" * 24, onion.TAG_FINAL, cbor2.dumps({"ok": {}}))
    with pytest.raises(OnionResponseError):
        onion.unwrap_response(keys, early)


# -- every bad layer gets the same error -------------------------------------------------------


def _assert_uniform(fn):
    with pytest.raises(OnionRejected) as e:
        fn()
    assert type(e.value) is OnionRejected
    assert e.value.code == "onion_rejected"
    assert str(e.value) == str(OnionRejected())
    return str(e.value)


def test_wrong_key_truncated_garbage_are_uniform(nodes):
    a, b, c = nodes[:3]
    blob, _ = onion.build_onion([a.hop, b.hop], REQUEST, NOW, rng())
    messages = {
        _assert_uniform(lambda: c.peel(blob, 0)),  # layer for a, opened by c
        _assert_uniform(lambda: a.peel(blob[:-1], 0)),  # truncated by one byte
        _assert_uniform(lambda: a.peel(blob[:40], 0)),  # truncated into the header
        _assert_uniform(lambda: a.peel(b"", 0)),
        _assert_uniform(lambda: a.peel(b"\x02" + blob[1:], 0)),  # unknown version
        _assert_uniform(lambda: a.peel(blob[:60] + bytes([blob[60] ^ 0x40]) + blob[61:], 0)),
        _assert_uniform(lambda: a.peel(b"\x01" + b"\x00" * 32 + blob[33:], 0)),  # low-order key
    }
    assert len(messages) == 1
    # nothing was remembered for the refused layers: the genuine one still opens
    assert a.peel(blob, 0).next_hop.node_id == b.node_id


def _raw_layer(hop, plaintext, seed=3):
    r = rng(seed)
    return onion.seal_layer(hop.x_pub, r(32), r(24), plaintext)[0]


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\xff\xff",  # not CBOR
        cbor2.dumps([1, 2, 3]),  # not a map
        cbor2.dumps({"next": "final", "inner": b"x"}),  # no ts
        cbor2.dumps({"next": "final", "inner": "text", "ts": NOW}),  # inner not bytes
        cbor2.dumps({"next": "final", "inner": b"x", "ts": NOW, "extra": 1}),
        cbor2.dumps({"next": {"id": b"x" * 31, "host": "h", "port": 1}, "inner": b"", "ts": NOW}),
        cbor2.dumps({"next": {"id": b"x" * 32, "host": "", "port": 1}, "inner": b"", "ts": NOW}),
        cbor2.dumps({"next": {"id": b"x" * 32, "host": "h", "port": 70000}, "inner": b"", "ts": NOW}),
        cbor2.dumps({"next": "elsewhere", "inner": b"", "ts": NOW}),
        cbor2.dumps({"next": "final", "inner": b"", "ts": float(NOW)}),
        cbor2.dumps({"next": "final", "inner": cbor2.CBORTag(2, b"\x01"), "ts": NOW}),  # a tag
    ],
)
def test_well_encrypted_but_malformed_plaintext_is_uniform(nodes, plaintext):
    _assert_uniform(lambda: nodes[0].peel(_raw_layer(nodes[0], plaintext), 0))


def test_stale_and_future_layers_are_uniform(nodes):
    a = nodes[0]
    old, _ = onion.build_onion([a.hop], REQUEST, NOW - 60_001, rng(1))
    new, _ = onion.build_onion([a.hop], REQUEST, NOW + 60_001, rng(2))
    edge, _ = onion.build_onion([a.hop], REQUEST, NOW - 60_000, rng(3))
    _assert_uniform(lambda: a.peel(old, 0))
    _assert_uniform(lambda: a.peel(new, 0))
    assert a.peel(edge, 0).is_final


def test_replay_is_uniform_and_expires_with_the_window(nodes):
    a = nodes[0]
    blob, _ = onion.build_onion([a.hop], REQUEST, NOW, rng())
    assert a.peel(blob, 0).inner == REQUEST
    _assert_uniform(lambda: a.peel(blob, 0))
    _assert_uniform(lambda: a.peel(blob, 0, now=NOW + 30_000))
    assert len(a.replay) == 1
    # once the layer's ts is out of the window the entry can go (the ts check refuses it anyway)
    a.replay.expire(NOW + 62_000)
    assert len(a.replay) == 0
    _assert_uniform(lambda: a.peel(blob, 0, now=NOW + 62_000))


def test_replay_cache_full_of_live_entries_is_busy_not_forgetful():
    cache = ReplayCache(max_entries=3)
    for i in range(3):
        assert cache.add(bytes([i]) * 32, NOW, NOW)
    with pytest.raises(Busy):
        cache.add(b"\x09" * 32, NOW, NOW + 1000)
    assert not cache.add(b"\x00" * 32, NOW, NOW + 1000)  # still remembered
    assert cache.add(b"\x09" * 32, NOW + 61_500, NOW + 61_500)  # old ones expired to make room
    assert len(cache) == 1


def test_fifteen_hops_work_sixteen_are_refused(nodes):
    path = [n.hop for n in nodes[:MAX_HOPS]]
    blob, keys = onion.build_onion(path, REQUEST, NOW, rng())
    for pos, n in enumerate(nodes[:MAX_HOPS]):
        p = n.peel(blob, pos)
        blob = p.inner
    assert p.is_final and blob == REQUEST

    with pytest.raises(ValueError, match="1..15 hops"):
        onion.build_onion([n.hop for n in nodes[: MAX_HOPS + 1]], REQUEST, NOW, rng())

    # a hand-made 16-layer onion: hop 15 (the 15th) refuses to forward to a 16th
    deep = [Node(100 + i, 8000 + i) for i in range(MAX_HOPS + 1)]
    inner, nxt = REQUEST, None
    for i, n in enumerate(reversed(deep)):
        pt = cbor2.dumps({"next": nxt.to_cbor() if nxt else "final", "inner": inner, "ts": NOW})
        inner = _raw_layer(n, pt, seed=i)
        nxt = n.hop.as_next()
    for pos, n in enumerate(deep[: MAX_HOPS - 1]):
        inner = n.peel(inner, pos).inner
    _assert_uniform(lambda: deep[MAX_HOPS - 1].peel(inner, MAX_HOPS - 1))
    # and a position already at the limit is refused before any crypto
    _assert_uniform(lambda: deep[MAX_HOPS].peel(inner, MAX_HOPS))
    _assert_uniform(lambda: deep[0].peel(inner, -1))


def test_empty_path_is_refused():
    with pytest.raises(ValueError):
        onion.build_onion([], REQUEST, NOW, rng())
