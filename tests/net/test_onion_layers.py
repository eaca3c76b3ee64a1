"""firmware.proto.onion v2: fixed-size packets at every hop, exact build/peel/answer results,
and the one uniform rejection (h11 style)."""

import hashlib
import random
import struct

import cbor2
import nacl.bindings as sodium
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

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

    def peel(self, blob, now=NOW):
        return onion.peel(blob, self.x_secret, self.x_pub, now_ms=now, replay=self.replay)


def rng(seed=7):
    return random.Random(seed).randbytes


@pytest.fixture
def nodes():
    return [Node(i + 1, 7000 + i) for i in range(MAX_HOPS + 2)]


REQUEST = cbor2.dumps({"v": 2, "id": 0, "op": "store", "args": {"data": b"hi"}})
SMALL, LARGE, HUGE = onion.SIZE_CLASSES


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


def _xchacha20_xor(key, data):
    """data XOR the XChaCha20 keystream (nonce 0, from block 1) from the spec: HChaCha20 +
    `cryptography`'s ChaCha20, whose 16-byte nonce is the LE block counter then the IETF nonce."""
    nonce = b"\0" * 24
    sub = _hchacha20(key, nonce[:16])
    counter_nonce = (1).to_bytes(4, "little") + b"\0" * 4 + nonce[16:]
    return Cipher(algorithms.ChaCha20(sub, counter_nonce), mode=None).encryptor().update(data)


def _independent_keys(hop, eph_secret):
    eph = X25519PrivateKey.from_private_bytes(eph_secret)
    eph_pub = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(hop.x_pub))
    k = hashlib.blake2b(shared + eph_pub + hop.x_pub, digest_size=64,
                        person=b"homenode-onion-2").digest()
    kr = hashlib.blake2b(k, digest_size=64, person=b"homenode-oresp-2").digest()
    return eph_pub, k[:32], k[32:], kr[:32], kr[32:]


def test_packet_matches_an_independent_derivation(nodes):
    """X25519 (cryptography), BLAKE2b (hashlib) and XChaCha20 (spec + cryptography) recompute
    the one-hop packet of docs/protocol.md byte for byte."""
    hop = nodes[0]
    randomness = rng(5)
    blob, keys = onion.build_onion([hop.hop], REQUEST, NOW, randomness)
    eph_secret = rng(5)(32)  # the first 32 random bytes build_onion drew
    eph_pub, k_mac, k_req, k_rmac, k_resp = _independent_keys(hop, eph_secret)
    assert len(blob) == SMALL and blob[:1] == b"\x02" and blob[1:33] == eph_pub
    body = blob[49:]
    assert blob[33:49] == hashlib.blake2b(b"\x02" + eph_pub + body, key=k_mac,
                                          digest_size=16).digest()
    plain = _xchacha20_xor(k_req, body)
    slot = plain[: onion.SLOT]
    assert slot[0] == 1 and int.from_bytes(slot[1:9], "big") == NOW  # final, ts
    assert slot[9] == 0  # response class index: a store's answer is small
    assert int.from_bytes(slot[157:161], "big") == len(REQUEST)
    assert plain[onion.SLOT : onion.SLOT + len(REQUEST)] == REQUEST
    assert keys == [onion.LayerKey(k_rmac, k_resp, SMALL)]


@pytest.mark.parametrize("n_hops", range(1, MAX_HOPS + 1))
@pytest.mark.parametrize("size, data_len", [(SMALL, 0), (SMALL, 3000), (LARGE, 4000),
                                            (LARGE, 76_800)])  # fmt: skip
def test_every_hop_sees_the_same_size_for_any_path_length(nodes, n_hops, size, data_len):
    """The issue's test: all layers of one class have identical sizes at every hop, and so
    do the answers on the way back."""
    request = cbor2.dumps({"v": 2, "id": 1, "op": "store", "args": {"data": b"d" * data_len}})
    path = nodes[:n_hops]
    blob, keys = onion.build_onion([n.hop for n in path], request, NOW, rng(n_hops))
    seen = []
    peeled = []
    for i, n in enumerate(path):
        seen.append(len(blob))
        p = n.peel(blob)
        peeled.append(p)
        if i < n_hops - 1:
            assert p.next_hop == NextHop(path[i + 1].node_id, "127.0.0.1", 7000 + i + 1)
            blob = p.inner
    assert seen == [size] * n_hops
    assert peeled[-1].is_final and peeled[-1].inner == request
    answer = onion.seal_final(peeled[-1].key, cbor2.dumps({"v": 2, "id": 1, "ok": {"x": 1}}))
    back = [len(answer)]
    for p in reversed(peeled[:-1]):
        answer = onion.carry_response(p.key, answer)
        back.append(len(answer))
    assert back == [SMALL] * n_hops  # a store's answer class, whatever the request size
    assert onion.unwrap_response(keys, answer) == {"v": 2, "id": 1, "ok": {"x": 1}}


def test_the_final_hop_cannot_count_the_hops_either(nodes):
    """What follows the request is random padding and filler alike, never zeros whose length
    would say how many hops came before."""
    for n_hops in (1, 3, 5):
        blob, _ = onion.build_onion([n.hop for n in nodes[:n_hops]], REQUEST, NOW, rng(n_hops))
        for n in nodes[: n_hops - 1]:
            blob = n.peel(blob).inner
        last = nodes[n_hops - 1]
        _, plain, _, _ = onion._open(blob, last.x_secret, last.x_pub)
        tail = plain[onion.SLOT + len(REQUEST) : -onion.SLOT]
        assert len(tail) == SMALL - 49 - onion.SLOT - len(REQUEST)
        assert bytes(32) not in tail  # no run of zeros anywhere: nothing to measure


def test_build_is_deterministic_given_randomness(nodes):
    path = [n.hop for n in nodes[:3]]
    assert onion.build_onion(path, REQUEST, NOW, rng(1)) == onion.build_onion(path, REQUEST, NOW, rng(1))
    assert onion.build_onion(path, REQUEST, NOW, rng(1))[0] != onion.build_onion(path, REQUEST, NOW, rng(2))[0]


@pytest.mark.parametrize("request_map, size", [
    ({"op": "store", "args": {}}, SMALL),
    ({"op": "info", "args": {}}, LARGE),  # info maps grow with counters
    ({"op": "delete", "args": {"hashes": [b"h" * 32] * 150}}, LARGE),  # 5,164 bytes worst case
    ({"op": "delete", "args": {"hashes": [b"h" * 32] * 100}}, SMALL),  # 3,464
    ({"op": "retrieve", "args": {}}, HUGE),  # defaults: 900,000 bytes, 100 messages
    ({"op": "retrieve", "args": {"max_bytes": 60_000, "max_count": 100}}, LARGE),
    ({"op": "retrieve", "args": {"max_bytes": 2_000, "max_count": 10}}, SMALL),
    ({"op": "retrieve", "args": {"max_bytes": 10**9, "max_count": 1000}}, HUGE),
])  # fmt: skip
def test_default_answer_class_holds_the_worst_case_answer(request_map, size):
    assert onion.response_class_for(cbor2.dumps({"v": 2, "id": 1, **request_map})) == size
    assert onion.response_class_for(b"\xff") == SMALL


def test_requests_pick_the_smallest_class_and_too_big_ones_are_refused(nodes):
    cap_small, cap_large = onion.request_capacity(SMALL), onion.request_capacity(LARGE)
    assert (cap_small, cap_large) == (SMALL - 49 - 5 * 161, LARGE - 49 - 5 * 161)
    assert onion.request_class(cap_small) == SMALL and onion.request_class(cap_small + 1) == LARGE
    with pytest.raises(ValueError, match="does not fit"):
        onion.request_class(cap_large + 1)
    with pytest.raises(ValueError, match="does not fit"):
        onion.build_onion([nodes[0].hop], b"x" * (cap_large + 1), NOW, rng())
    with pytest.raises(ValueError, match="response_size"):
        onion.build_onion([nodes[0].hop], REQUEST, NOW, rng(), response_size=5000)


def test_an_answer_too_big_for_its_class_becomes_too_large_in_class(nodes):
    blob, keys = onion.build_onion([nodes[0].hop], REQUEST, NOW, rng())
    p = nodes[0].peel(blob)
    big = cbor2.dumps({"v": 2, "id": 9, "ok": {"messages": [b"m" * SMALL], "more": False}})
    sealed = onion.seal_final(p.key, big)
    assert len(sealed) == SMALL
    resp = onion.unwrap_response(keys, sealed)
    assert resp["id"] == 9 and resp["err"]["code"] == "too_large"
    assert "response class" in resp["err"]["msg"]


def test_hop_failure_names_the_hop(nodes):
    a, b, c = nodes[:3]
    blob, keys = onion.build_onion([a.hop, b.hop, c.hop], REQUEST, NOW, rng())
    p0 = a.peel(blob)
    p1 = b.peel(p0.inner)
    r = onion.seal_failure(p1.key, "unreachable", "connect refused")
    assert len(r) == SMALL
    r = onion.carry_response(p0.key, r)
    with pytest.raises(HopFailed) as e:
        onion.unwrap_response(keys, r)
    assert e.value.index == 1 and e.value.next_code == "unreachable"


def test_tampered_or_cut_answers_are_detected(nodes):
    a, b = nodes[:2]
    blob, keys = onion.build_onion([a.hop, b.hop], REQUEST, NOW, rng())
    p0 = a.peel(blob)
    p1 = b.peel(p0.inner)
    r = onion.carry_response(p0.key, onion.seal_final(p1.key, cbor2.dumps({"ok": {}})))
    with pytest.raises(OnionResponseError, match="does not open"):
        onion.unwrap_response(keys, r[:-1] + bytes([r[-1] ^ 1]))
    with pytest.raises(OnionResponseError, match="wrong size"):
        onion.unwrap_response(keys, r[:30])
    with pytest.raises(OnionResponseError, match="class"):
        onion.carry_response(p0.key, r[:-1])  # a next hop that cut its answer
    # a middle hop pretending to be final is caught
    early = onion.seal_final(p0.key, cbor2.dumps({"ok": {}}))
    with pytest.raises(OnionResponseError, match="not"):
        onion.unwrap_response(keys, early)


# -- every bad layer gets the same error -------------------------------------------------------


def _assert_uniform(fn):
    with pytest.raises(OnionRejected) as e:
        fn()
    assert type(e.value) is OnionRejected
    assert e.value.code == "onion_rejected"
    assert str(e.value) == str(OnionRejected())
    return str(e.value)


def test_wrong_key_truncated_tampered_garbage_are_uniform(nodes):
    a, b, c = nodes[:3]
    blob, _ = onion.build_onion([a.hop, b.hop], REQUEST, NOW, rng())
    messages = {
        _assert_uniform(lambda: c.peel(blob)),  # layer for a, opened by c
        _assert_uniform(lambda: a.peel(blob[:-1])),  # not a size class
        _assert_uniform(lambda: a.peel(blob + b"\x00")),
        _assert_uniform(lambda: a.peel(blob[:40])),
        _assert_uniform(lambda: a.peel(b"")),
        _assert_uniform(lambda: a.peel(b"\x01" + blob[1:])),  # v1 packet
        _assert_uniform(lambda: a.peel(blob[:60] + bytes([blob[60] ^ 0x40]) + blob[61:])),
        _assert_uniform(lambda: a.peel(blob[:-1] + bytes([blob[-1] ^ 1]))),  # last byte
        _assert_uniform(lambda: a.peel(blob[:40] + bytes([blob[40] ^ 1]) + blob[41:])),  # mac
        _assert_uniform(lambda: a.peel(b"\x02" + b"\x00" * 32 + blob[33:])),  # low-order key
        _assert_uniform(lambda: a.peel(bytes(SMALL))),
    }
    assert len(messages) == 1
    # nothing was remembered for the refused layers: the genuine one still opens
    assert a.peel(blob).next_hop.node_id == b.node_id


def _with_slot(hop, slot, rest=b""):
    """A correctly encrypted and mac'd one-hop packet carrying ``slot`` (for malformed slots)."""
    r = rng(3)
    eph_secret = r(32)
    eph_pub, k_mac, k_req, _, _ = _independent_keys(hop, eph_secret)
    plain = slot + rest
    plain += bytes(SMALL - 49 - len(plain))
    body = _xchacha20_xor(k_req, plain)
    mac = hashlib.blake2b(b"\x02" + eph_pub + body, key=k_mac, digest_size=16).digest()
    return b"\x02" + eph_pub + mac + body


_S = struct.Struct(">BqB32s32s16sHB64sI")


@pytest.mark.parametrize("slot", [
    _S.pack(2, NOW, 0, b"", b"", b"", 0, 0, b"", 0),  # unknown kind
    _S.pack(1, NOW, 3, b"", b"", b"", 0, 0, b"", 0),  # unknown response class
    _S.pack(1, NOW, 0, b"", b"", b"", 0, 0, b"", SMALL),  # request longer than the room
    _S.pack(0, NOW, 0, b"x" * 32, b"", b"", 0, 1, b"h", 0),  # port 0
    _S.pack(0, NOW, 0, b"x" * 32, b"", b"", 1, 0, b"", 0),  # no host
    _S.pack(0, NOW, 0, b"x" * 32, b"", b"", 1, 65, b"h" * 64, 0),  # host longer than 64
    _S.pack(0, NOW, 0, b"x" * 32, b"", b"", 1, 2, b"\xff\xfe", 0),  # host not UTF-8
    _S.pack(1, NOW - 61_000, 0, b"", b"", b"", 0, 0, b"", 0),  # stale
])  # fmt: skip
def test_well_encrypted_but_malformed_slots_are_uniform(nodes, slot):
    _assert_uniform(lambda: nodes[0].peel(_with_slot(nodes[0], slot)))


def test_hand_made_final_slot_opens(nodes):
    """The same builder with a good slot opens: the malformed cases fail for their slot."""
    slot = _S.pack(1, NOW, 0, b"", b"", b"", 0, 0, b"", 3)
    assert nodes[0].peel(_with_slot(nodes[0], slot, b"abc")).inner == b"abc"


def test_stale_and_future_layers_are_uniform(nodes):
    a = nodes[0]
    old, _ = onion.build_onion([a.hop], REQUEST, NOW - 60_001, rng(1))
    new, _ = onion.build_onion([a.hop], REQUEST, NOW + 60_001, rng(2))
    edge, _ = onion.build_onion([a.hop], REQUEST, NOW - 60_000, rng(3))
    _assert_uniform(lambda: a.peel(old))
    _assert_uniform(lambda: a.peel(new))
    assert a.peel(edge).is_final


def test_replay_is_uniform_and_expires_with_the_window(nodes):
    a = nodes[0]
    blob, _ = onion.build_onion([a.hop], REQUEST, NOW, rng())
    assert a.peel(blob).inner == REQUEST
    _assert_uniform(lambda: a.peel(blob))
    _assert_uniform(lambda: a.peel(blob, now=NOW + 30_000))
    assert len(a.replay) == 1
    # once the layer's ts is out of the window the entry can go (the ts check refuses it anyway)
    a.replay.expire(NOW + 62_000)
    assert len(a.replay) == 0
    _assert_uniform(lambda: a.peel(blob, now=NOW + 62_000))


def test_replay_cache_full_of_live_entries_is_busy_not_forgetful():
    cache = ReplayCache(max_entries=3)
    for i in range(3):
        assert cache.add(bytes([i]) * 32, NOW, NOW)
    with pytest.raises(Busy):
        cache.add(b"\x09" * 32, NOW, NOW + 1000)
    assert not cache.add(b"\x00" * 32, NOW, NOW + 1000)  # still remembered
    assert cache.add(b"\x09" * 32, NOW + 61_500, NOW + 61_500)  # old ones expired to make room
    assert len(cache) == 1


def test_paths_longer_than_the_packet_has_slots_for_cannot_be_built(nodes):
    with pytest.raises(ValueError, match="1..5 hops"):
        onion.build_onion([n.hop for n in nodes[: MAX_HOPS + 1]], REQUEST, NOW, rng())
    with pytest.raises(ValueError):
        onion.build_onion([], REQUEST, NOW, rng())
