"""Signed node records, hello proofs and reachability answers (firmware/proto/records.py)."""

import cbor2
import pytest
from nacl.signing import SigningKey

from firmware.proto import pow
from firmware.proto.codec import encode_map
from firmware.proto.records import (
    FLAG_MAPPED,
    FLAG_REACHABLE,
    FLAG_RELAYED,
    MAX_LIFETIME_MS,
    RECORD_PREFIX,
    RecordError,
    address_allowed,
    address_scope,
    make_record,
    sign_hello,
    sign_ping,
    verify_hello,
    verify_ping,
    verify_record,
)

T0 = 1_800_000_000_000
KEY = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)


def rec(key=KEY, **kw):
    args = dict(seq=7, addrs=["127.0.0.1"], port=7070, version="0.1.0", flags=FLAG_REACHABLE,
                issued=T0, expires=T0 + 3_600_000)
    args.update(kw)
    return make_record(key, **args)


def resign(body, key=KEY):
    raw = encode_map(body)
    return {"body": raw, "sig": key.sign(RECORD_PREFIX + raw).signature}


def body_of(r):
    return cbor2.loads(r.wire["body"])


def reason(wire, now=T0):
    with pytest.raises(RecordError) as info:
        verify_record(wire, now)
    return info.value.reason


def test_roundtrip_fields():
    r = rec(flags=FLAG_REACHABLE | FLAG_MAPPED)
    back = verify_record(r.wire, T0 + 1000)
    assert back == r
    assert (back.id, back.seq, back.addrs, back.port, back.version) == (
        bytes(KEY.verify_key), 7, ("127.0.0.1",), 7070, "0.1.0")
    assert back.flag_names == ["reachable", "mapped"]
    assert back.address == ("127.0.0.1", 7070)
    assert (back.issued, back.expires) == (T0, T0 + 3_600_000)


def test_relayed_record_names_relays_and_the_address_they_see():
    r = rec(addrs=["198.51.100.7"], flags=FLAG_RELAYED, relays=[bytes(OTHER.verify_key)])
    back = verify_record(r.wire, T0)
    assert back.relays == (bytes(OTHER.verify_key),) and back.relayed
    assert back.address == ("198.51.100.7", 7070)  # what placement groups it by
    with pytest.raises(RecordError, match="1..4 host strings"):  # v2: never address-less
        rec(addrs=[], flags=FLAG_RELAYED, relays=[bytes(OTHER.verify_key)])


def _solved(key, bits):
    return pow.solve(bytes(key.verify_key), bits)


@pytest.mark.parametrize("bits", [0, 8, 12])
def test_record_carries_the_ids_proof_of_work(bits):
    proof = _solved(KEY, bits) if bits else b""
    r = rec(pow=proof)
    assert verify_record(r.wire, T0, pow_bits=bits).pow == proof
    assert body_of(r)["pow"] == proof


def test_records_below_the_network_difficulty_are_refused():
    weak = _solved(KEY, 4)
    while pow.work(bytes(KEY.verify_key), weak) < 1 << (64 - 12):  # make sure it is < 12 bits
        weak = pow.search(bytes(KEY.verify_key), 4, int.from_bytes(weak, "big") + 1, 1 << 20)
    r = rec(pow=weak)
    assert verify_record(r.wire, T0, pow_bits=4).id == bytes(KEY.verify_key)
    assert reason_bits(r.wire, 12) == "pow"
    assert reason_bits(rec(pow=b"").wire, 1) == "pow"
    # a proof is bound to its key: KEY's proof does not admit OTHER
    strong = _solved(KEY, 10)
    assert reason_bits(rec(key=OTHER, pow=strong).wire, 10) == "pow"


def reason_bits(wire, bits):
    with pytest.raises(RecordError) as info:
        verify_record(wire, T0, pow_bits=bits)
    return info.value.reason


def test_newer_seq_wins():
    a, b = rec(seq=7), rec(seq=8)
    assert b.newer_than(a) and not a.newer_than(b) and not a.newer_than(rec(seq=7))


def test_forged_signature_rejected():
    r = rec()
    sig = bytearray(r.wire["sig"])
    sig[0] ^= 1
    assert reason({"body": r.wire["body"], "sig": bytes(sig)}) == "bad_signature"


def test_body_tampered_rejected():
    body = body_of(rec())
    body["port"] = 9999
    forged = {"body": encode_map(body), "sig": rec().wire["sig"]}
    assert reason(forged) == "bad_signature"


def test_signed_by_another_key_rejected():
    body = body_of(rec())  # claims KEY's id, signed by OTHER
    assert reason(resign(body, OTHER)) == "bad_signature"


def test_expired_and_future_records():
    r = rec()
    assert reason(r.wire, now=T0 + 3_600_000) == "expired"
    verify_record(r.wire, T0 + 3_599_999)
    assert reason(r.wire, now=T0 - 60_001) == "not_yet_valid"
    verify_record(r.wire, T0 - 60_000)


def test_lifetime_cap():
    body = body_of(rec())
    body["expires"] = T0 + MAX_LIFETIME_MS + 1
    assert reason(resign(body)) == "lifetime"
    with pytest.raises(RecordError):
        rec(expires=T0 + MAX_LIFETIME_MS + 1)


@pytest.mark.parametrize(
    "change",
    [
        {"port": 0},
        {"port": 65536},
        {"seq": -1},
        {"flags": 8},
        {"addrs": ["a"] * 5},
        {"addrs": [""]},
        {"addrs": [" 1.2.3.4"]},
        {"addrs": [7]},
        {"ver": "x" * 33},
        {"id": b"\x00" * 31},
        {"relays": [b"\x00" * 31]},
        {"flags": FLAG_RELAYED},  # relayed without relays
        {"addrs": []},  # v2: every record names an address
        {"pow": "x"},
        {"pow": b"\x00" * 17},
        {"expires": T0},  # expires <= issued
        {"extra": 1},
    ],
)
def test_malformed_bodies(change):
    body = body_of(rec())
    body.update(change)
    with pytest.raises(RecordError) as info:
        verify_record(resign(body), T0)
    assert info.value.reason == "malformed"
    assert info.value.code == "bad_request"


def test_missing_field():
    body = body_of(rec())
    del body["ver"]
    assert reason(resign(body)) == "malformed"


@pytest.mark.parametrize(
    "wire",
    [
        None,
        {"body": b"\xa0"},
        {"body": "x", "sig": b"\x00" * 64},
        {"body": b"\xa0", "sig": b"\x00" * 63},
        {"body": b"\xff\xff", "sig": b"\x00" * 64},
        {"body": b"\x80", "sig": b"\x00" * 64},  # a list, not a map
        {"body": b"\x00" * 2000, "sig": b"\x00" * 64},
    ],
)
def test_malformed_wire(wire):
    assert reason(wire) == "malformed"


def test_hello_proof():
    server, nonce = bytes(OTHER.verify_key), b"\x33" * 32
    client = bytes(KEY.verify_key)
    sig = sign_hello(KEY, server, nonce)
    verify_hello(server, nonce, client, sig)
    for args in [(server, b"\x34" * 32, client), (client, nonce, client),
                 (server, nonce, bytes(OTHER.verify_key))]:
        with pytest.raises(RecordError) as info:
            verify_hello(*args, sig)
        assert info.value.reason == "bad_signature"
    with pytest.raises(RecordError):
        verify_hello(server, nonce[:31], client, sig)


def test_ping_answer_is_not_a_hello():
    tester, nonce, node = bytes(OTHER.verify_key), b"\x44" * 32, bytes(KEY.verify_key)
    sig = sign_ping(KEY, tester, nonce)
    verify_ping(tester, nonce, node, sig)
    with pytest.raises(RecordError):
        verify_hello(tester, nonce, node, sig)  # domain separation: prefixes differ
    with pytest.raises(RecordError):
        verify_ping(tester, nonce, node, sig[:63])


@pytest.mark.parametrize("host,scope", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("[::1]", "loopback"),
    ("10.1.2.3", "private"), ("192.168.77.10", "private"), ("fd00::1", "private"),
    ("192.0.1.3", "public"), ("8.8.8.8", "public"), ("2a00:1450::1", "public"),
    ("169.254.1.1", "link_local"), ("fe80::1", "link_local"), ("224.0.0.1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("node.example.org", "name"),
])  # fmt: skip
def test_address_scope(host, scope):
    assert address_scope(host) == scope


def test_address_allowed():
    assert address_allowed("127.0.0.1", "127.0.0.1")  # a loopback test cluster
    assert not address_allowed("127.0.0.1", "203.0.114.5")  # never probe our own machine
    assert not address_allowed("::1", "10.0.0.2")
    assert address_allowed("10.0.0.7", "10.0.0.2") and address_allowed("8.8.8.8", "127.0.0.1")
    assert not address_allowed("169.254.0.1", "169.254.0.2")
    assert not address_allowed("0.0.0.0", "127.0.0.1")
