"""parse_request and the clock checks: every field's type, size and range, and the error names it."""

import nacl.signing
import pytest

from firmware.proto import (
    MAX_DATA,
    BadRequest,
    BadSignature,
    DataTooLarge,
    DeleteRequest,
    ExpireRequest,
    FrameDecoder,
    InfoRequest,
    RetrieveRequest,
    StaleSignature,
    StoreRequest,
    TtlOutOfRange,
    UnknownOp,
    check_expire_times,
    check_signature,
    check_store_times,
    encode_request,
    message_hash,
    parse_request,
    sign_request,
)

NOW = 1_700_000_000_000
KEY = nacl.signing.SigningKey(bytes(range(32)))
RCPT = bytes(KEY.verify_key)
H1, H2 = b"\x11" * 32, b"\x22" * 32
DAY = 86_400_000


def sig(op, ns=5, ts=NOW, key=KEY, **bound):
    """A v2 signature over what valid_args(op) does (store: its hash; delete/expire: hashes)."""
    default = {"store": {"msg_hash": message_hash(RCPT, 5, NOW, b"hello")},
               "delete": {"hashes": [H1, H2]},
               "expire": {"hashes": [H1], "expiry": NOW + DAY}}.get(op, {})
    return sign_request(key, op, bytes(key.verify_key), ns, ts, **(default | bound))


def valid_args(op):
    if op == "store":
        return {"recipient": RCPT, "ns": 5, "ts": NOW, "ttl": DAY, "data": b"hello",
                "sig_ts": NOW, "sig": sig("store")}  # fmt: skip
    if op == "retrieve":
        return {"recipient": RCPT, "ns": 5, "after": H1, "max_count": 10, "max_bytes": 1000,
                "sig_ts": NOW, "sig": sig("retrieve")}  # fmt: skip
    if op == "delete":
        return {"recipient": RCPT, "ns": 5, "hashes": [H1, H2], "sig_ts": NOW,
                "sig": sig("delete")}  # fmt: skip
    if op == "expire":
        return {"recipient": RCPT, "ns": 5, "hashes": [H1], "expiry": NOW + DAY, "sig_ts": NOW,
                "sig": sig("expire")}  # fmt: skip
    return {}


def req(op, id=42, **changes):
    args = valid_args(op)
    for k, v in changes.items():
        if v is DROP:
            del args[k]
        else:
            args[k] = v
    return {"v": 2, "id": id, "op": op, "args": args}


DROP = object()


def bad(frame, cls=BadRequest):
    with pytest.raises(cls) as info:
        parse_request(frame)
    return info.value


# -- happy paths -------------------------------------------------------------------------------


def test_parse_each_op():
    assert parse_request(req("store")) == StoreRequest(
        42, RCPT, 5, NOW, DAY, b"hello", NOW, sig("store")
    )
    assert parse_request(req("retrieve")) == RetrieveRequest(
        42, RCPT, 5, NOW, sig("retrieve"), H1, 10, 1000
    )
    assert parse_request(req("delete")) == DeleteRequest(42, RCPT, 5, (H1, H2), NOW, sig("delete"))
    assert parse_request(req("expire")) == ExpireRequest(
        42, RCPT, 5, (H1,), NOW + DAY, NOW, sig("expire")
    )
    assert parse_request(req("info")) == InfoRequest(42)


def test_public_store_needs_no_signature():
    r = parse_request(req("store", ns=0, sig_ts=DROP, sig=DROP))
    assert (r.ns, r.sig_ts, r.sig, r.expiry) == (0, None, None, NOW + DAY)
    check_signature(r, NOW + 10 * DAY)  # nothing to check


def test_retrieve_defaults():
    r = parse_request(req("retrieve", after=DROP, max_count=DROP, max_bytes=DROP))
    assert (r.after, r.max_count, r.max_bytes) == (None, 100, 900_000)
    assert parse_request(req("retrieve", after=None)).after is None


def test_duplicate_hashes_collapse_in_order():
    assert parse_request(req("delete", hashes=[H2, H1, H2])).hashes == (H2, H1)


# -- top level ---------------------------------------------------------------------------------


def test_unknown_op():
    e = bad(req("info") | {"op": "drop_table"}, UnknownOp)
    assert (e.code, e.field, e.request_id) == ("unknown_op", "op", 42)
    assert "store, retrieve, delete, expire, info" in str(e)


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("id", -1, "id"),
        ("id", 2**32, "id"),
        ("id", True, "id"),
        ("id", "1", "id"),
        ("id", None, "id"),
        ("v", 1, "v"),  # v1 is another protocol now
        ("v", True, "v"),
        ("v", "1", "v"),
        ("op", 1, "op"),
        ("op", b"info", "op"),
        ("args", [], "args"),
        ("args", None, "args"),
        ("extra", 1, "extra"),
    ],
)
def test_top_level_fields(key, value, field):
    e = bad(req("info") | {key: value})
    assert e.field == field and e.code == "bad_request"
    assert e.request_id == (None if key == "id" else 42)


@pytest.mark.parametrize("key", ["v", "id", "op", "args"])
def test_top_level_missing(key):
    frame = req("info")
    del frame[key]
    assert bad(frame).field == key


def test_id_bounds():
    assert parse_request(req("info", id=0)).id == 0
    assert parse_request(req("info", id=2**32 - 1)).id == 2**32 - 1


@pytest.mark.parametrize("op", ["store", "retrieve", "delete", "expire", "info"])
def test_unknown_arg_key(op):
    e = bad(req(op, bogus=1))
    assert (e.field, e.request_id) == ("bogus", 42)
    assert "unknown key" in str(e)


# -- wrong types for every field ---------------------------------------------------------------

BYTES_BAD = ["text", 1, True, None, [], {}, 1.5]
INT_BAD = [True, False, 1.0, "1", b"\x01", None, [], {}]
FIELDS = {
    "store": {"recipient": BYTES_BAD, "ns": INT_BAD, "ts": INT_BAD, "ttl": INT_BAD,
              "data": ["text", 1, True, None, [], {}], "sig_ts": INT_BAD, "sig": BYTES_BAD},
    "retrieve": {"recipient": BYTES_BAD, "ns": INT_BAD, "after": ["t", 1, True, [], {}],
                 "max_count": INT_BAD[:-2], "max_bytes": INT_BAD[:-2], "sig_ts": INT_BAD,
                 "sig": BYTES_BAD},
    "delete": {"recipient": BYTES_BAD, "ns": INT_BAD, "hashes": [H1, "x", 1, None, {}],
               "sig_ts": INT_BAD, "sig": BYTES_BAD},
    "expire": {"recipient": BYTES_BAD, "ns": INT_BAD, "hashes": [H1, "x", 1, None, {}],
               "expiry": INT_BAD, "sig_ts": INT_BAD, "sig": BYTES_BAD},
}  # fmt: skip
CASES = [(op, k, v) for op, fields in FIELDS.items() for k, vals in fields.items() for v in vals]


@pytest.mark.parametrize("op, field, value", CASES)
def test_wrong_type(op, field, value):
    e = bad(req(op, **{field: value}))
    assert e.field == field and e.request_id == 42
    assert str(e).startswith(field + ": ")


MISSING = [(op, k) for op, fields in FIELDS.items() for k in fields
           if (op, k) not in {("retrieve", "after"), ("retrieve", "max_count"),
                              ("retrieve", "max_bytes")}]  # fmt: skip


@pytest.mark.parametrize("op, field", MISSING)
def test_missing_field(op, field):
    e = bad(req(op, **{field: DROP}))
    assert e.field == field and "missing" in str(e)


@pytest.mark.parametrize("field, size", [("recipient", 32), ("sig", 64), ("after", 32)])
def test_byte_lengths(field, size):
    for n in (0, size - 1, size + 1):
        assert bad(req("retrieve", **{field: b"\x00" * n})).field == field


# -- sizes and ranges --------------------------------------------------------------------------


def test_data_size_limit():
    assert len(parse_request(req("store", data=b"\x00" * MAX_DATA)).data) == 76_800
    assert parse_request(req("store", data=b"")).data == b""
    e = bad(req("store", data=b"\x00" * (MAX_DATA + 1)), DataTooLarge)
    assert (e.code, e.field) == ("too_large", "data")
    assert "76801" in str(e)


@pytest.mark.parametrize(
    "ns, ttl, ok",
    [
        (0, 10_000, True),
        (0, 9_999, False),
        (0, 14 * DAY, True),
        (0, 14 * DAY + 1, False),
        (5, 10_000, True),
        (5, 9_999, False),
        (5, 30 * DAY, True),
        (5, 30 * DAY + 1, False),
        (-32768, 30 * DAY, True),
        (0, 0, False),
        (0, -1, False),
    ],
)
def test_ttl_bounds(ns, ttl, ok):
    extra = {"sig_ts": DROP, "sig": DROP} if ns == 0 else {}
    frame = req("store", ns=ns, ttl=ttl, **extra)
    if ok:
        assert parse_request(frame).ttl == ttl
    else:
        e = bad(frame, TtlOutOfRange)
        assert (e.code, e.field) == ("ttl_out_of_range", "ttl")


@pytest.mark.parametrize("ns, ok", [(-32768, True), (32767, True), (-32769, False),
                                    (32768, False), (2**64 - 1, False)])  # fmt: skip
def test_ns_bounds(ns, ok):
    for op in ("store", "retrieve", "delete", "expire"):
        if ok:
            assert parse_request(req(op, ns=ns)).ns == ns
        else:
            assert bad(req(op, ns=ns)).field == "ns"


def test_store_ns0_refuses_signature_fields():
    assert bad(req("store", ns=0, sig=DROP)).field == "sig_ts"
    assert bad(req("store", ns=0, sig_ts=DROP)).field == "sig"


@pytest.mark.parametrize("field", ["ts", "sig_ts"])
def test_time_range(field):
    assert bad(req("store", **{field: -1})).field == field
    assert bad(req("store", **{field: 2**63})).field == field


def test_ts_plus_ttl_overflow():
    assert bad(req("store", ts=2**63 - 1)).field == "ts"


@pytest.mark.parametrize("field, lo, hi", [("max_count", 1, 1000), ("max_bytes", 1, 900_000)])
def test_retrieve_limits(field, lo, hi):
    assert getattr(parse_request(req("retrieve", **{field: lo})), field) == lo
    assert getattr(parse_request(req("retrieve", **{field: hi})), field) == hi
    assert bad(req("retrieve", **{field: lo - 1})).field == field
    assert bad(req("retrieve", **{field: hi + 1})).field == field


@pytest.mark.parametrize("op", ["delete", "expire"])
def test_hash_list_sizes(op):
    many = [i.to_bytes(32, "big") for i in range(1001)]
    assert len(parse_request(req(op, hashes=many[:1000])).hashes) == 1000
    assert bad(req(op, hashes=many)).field == "hashes"
    assert bad(req(op, hashes=[])).field == "hashes"
    e = bad(req(op, hashes=[H1, H2, b"\x00" * 31]))
    assert e.field == "hashes[2]" and "31 bytes" in str(e)


# -- clock checks ------------------------------------------------------------------------------


def test_store_ts_future_bound():
    check_store_times(parse_request(req("store", ts=NOW + 60_000)), NOW)
    with pytest.raises(BadRequest, match="60001 ms ahead") as info:
        check_store_times(parse_request(req("store", ts=NOW + 60_001)), NOW)
    assert info.value.field == "ts"


def test_store_already_expired():
    r = parse_request(req("store", ts=NOW - DAY, ttl=DAY))  # expiry == now
    with pytest.raises(BadRequest, match="already expired"):
        check_store_times(r, NOW)
    check_store_times(r, NOW - 1)


def test_expire_must_be_future():
    r = parse_request(req("expire", expiry=NOW))
    with pytest.raises(BadRequest) as info:
        check_expire_times(r, NOW)
    assert info.value.field == "expiry"
    check_expire_times(r, NOW - 1)


@pytest.mark.parametrize("op", ["store", "retrieve", "delete", "expire"])
def test_signature_ok_and_window(op):
    r = parse_request(req(op))
    check_signature(r, NOW)
    check_signature(r, NOW + 60_000)
    check_signature(r, NOW - 60_000)
    for now in (NOW + 60_001, NOW - 60_001):
        with pytest.raises(StaleSignature) as info:
            check_signature(r, now)
        assert (info.value.code, info.value.field) == ("stale_signature", "sig_ts")


@pytest.mark.parametrize(
    "changes",
    [
        {"sig": sig("delete")},  # signed for another op
        {"sig": sig("retrieve", ns=6)},  # another namespace
        {"sig": sig("retrieve", ts=NOW + 1)},  # another sig_ts
        {"sig": sig("retrieve", key=nacl.signing.SigningKey(b"\x01" * 32))},  # another key
        {"sig": b"\x00" * 64},
        {"sig": bytes([sig("retrieve")[0] ^ 1]) + sig("retrieve")[1:]},
        {"recipient": b"\x00" * 32},  # not a usable public key
        {"recipient": b"\xff" * 32},
    ],
)
def test_bad_signatures(changes):
    r = parse_request(req("retrieve", **changes))
    with pytest.raises(BadSignature) as info:
        check_signature(r, NOW)
    assert (info.value.code, info.value.field, info.value.request_id) == (
        "bad_signature",
        "sig",
        42,
    )


def test_info_needs_no_signature():
    check_signature(parse_request(req("info")), NOW)


# -- client encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["store", "retrieve", "delete", "expire", "info"])
def test_encode_request_round_trip(op):
    r = parse_request(req(op))
    dec = FrameDecoder()
    dec.receive_data(encode_request(r))
    assert parse_request(dec.next_event()) == r


def test_encode_request_validates_before_sending():
    with pytest.raises(DataTooLarge):
        encode_request(StoreRequest(1, RCPT, 0, NOW, DAY, b"x" * (MAX_DATA + 1)))
    with pytest.raises(BadRequest, match="sig_ts"):
        encode_request(StoreRequest(1, RCPT, 5, NOW, DAY, b"x"))


def test_unknown_bytes_key_is_named_readably():
    e = bad(req("info") | {"args": {b"k": 1}})
    assert e.field == "b'k'" and "allowed: none" in str(e)
