"""Hypothesis properties: untrusted bytes only ever give frames or ProtocolErrors; valid requests
and results survive encode -> frame -> decode -> parse unchanged."""

import struct

import cbor2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from firmware.proto import (
    CLOSED,
    MAX_DATA,
    NEED_DATA,
    DeleteRequest,
    ExpireRequest,
    FrameDecoder,
    InfoRequest,
    ProtocolError,
    RetrieveRequest,
    StoreRequest,
    encode_frame,
    encode_request,
    max_ttl,
    parse_request,
    parse_response,
    request_to_map,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- arbitrary input ---------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.floats(), st.binary(max_size=40),
    st.text(max_size=20),
)  # fmt: skip
cbor_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(0, 5)), inner, max_size=4),
        st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 4, 25, 28, 29, 35, 258, 999]), inner),
    ),
    max_leaves=12,
)


def _cbor_bytes(value):
    try:
        return cbor2.dumps(value)
    except Exception:
        return b"\xa0"


bodies = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.text(max_size=8), cbor_values, max_size=5).map(_cbor_bytes),
    cbor_values.map(_cbor_bytes),
    st.builds(lambda v, junk: _cbor_bytes(v) + junk, cbor_values, st.binary(max_size=4)),
)
framed = st.builds(lambda b: struct.pack(">I", len(b)) + b, bodies)
streams = st.lists(st.one_of(framed, st.binary(max_size=12)), max_size=5).map(b"".join)


def _chunked(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points + [len(data)]:
        if p > prev:
            out.append(data[prev:p])
            prev = p
    return out


@SETTINGS
@given(streams, st.lists(st.integers(0, 10_000), max_size=8), st.booleans())
def test_decoder_yields_only_frames_or_protocol_errors(data, cuts, eof):
    dec = FrameDecoder()
    failed = False
    for chunk in _chunked(data, cuts) + ([b""] if eof else []):
        dec.receive_data(chunk)
        while True:
            try:
                ev = dec.next_event()
            except ProtocolError as exc:
                event(f"error {type(exc).__name__}")
                failed = True
                break
            if ev is NEED_DATA or ev is CLOSED:
                break
            assert type(ev) is dict
            event("frame")
        if failed:
            break
    if failed:  # dead for good
        for _ in range(2):
            try:
                dec.next_event()
                raise AssertionError("decoder revived after an error")
            except ProtocolError:
                pass


@SETTINGS
@given(cbor_values)
def test_parse_response_returns_or_raises_protocol_error(value):
    for op in (None, "store", "retrieve", "delete", "expire", "info"):
        for frame in ({"v": 2, "id": 1, "ok": value}, {"v": 2, "id": None, "err": value}):
            try:
                parse_response(frame, op)
            except ProtocolError:
                pass


# -- valid requests round-trip -----------------------------------------------------------------

ids = st.integers(0, 2**32 - 1)
keys = st.binary(min_size=32, max_size=32)
nss = st.integers(-32768, 32767)
times = st.integers(0, 2**62)
sigs = st.binary(min_size=64, max_size=64)
hash_lists = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20, unique=True)


@st.composite
def stores(draw):
    ns = draw(nss)
    ttl = draw(st.integers(10_000, max_ttl(ns)))
    data = draw(st.one_of(st.binary(max_size=300), st.just(b"\x01" * MAX_DATA)))
    base = (draw(ids), draw(keys), ns, draw(times), ttl, data)
    if ns == 0:
        return StoreRequest(*base)
    return StoreRequest(*base, draw(times), draw(sigs))


requests = st.one_of(
    stores(),
    st.builds(RetrieveRequest, ids, keys, nss, times, sigs,
              st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
              st.integers(1, 1000), st.integers(1, 900_000)),
    st.builds(DeleteRequest, ids, keys, nss, hash_lists.map(tuple), times, sigs),
    st.builds(ExpireRequest, ids, keys, nss, hash_lists.map(tuple), times, times, sigs),
    st.builds(InfoRequest, ids),
)  # fmt: skip


@SETTINGS
@given(st.lists(requests, min_size=1, max_size=4), st.lists(st.integers(0, 10**6), max_size=4))
def test_valid_requests_round_trip_through_any_chunking(reqs, cuts):
    data = b"".join(encode_request(r) for r in reqs)
    dec = FrameDecoder()
    got = []
    for chunk in _chunked(data, cuts):
        dec.receive_data(chunk)
        while (ev := dec.next_event()) is not NEED_DATA:
            got.append(parse_request(ev))
    assert got == reqs


@SETTINGS
@given(requests)
def test_encode_frame_of_request_map_matches_encode_request(r):
    assert encode_frame(request_to_map(r)) == encode_request(r)


ARG_KEYS = ["recipient", "ns", "ts", "ttl", "data", "sig_ts", "sig", "after", "max_count",
            "max_bytes", "hashes", "expiry", "zz"]  # fmt: skip
mutation = st.tuples(
    st.sampled_from(["set", "drop", "set_top"]), st.sampled_from(ARG_KEYS), cbor_values
)


@SETTINGS
@given(requests, st.lists(mutation, min_size=1, max_size=3))
def test_mutated_requests_parse_or_raise_protocol_error(r, mutations):
    frame = request_to_map(r)
    for kind, key, value in mutations:
        if kind != "set_top" and type(frame.get("args")) is not dict:
            continue  # args itself was replaced by a non-map earlier
        if kind == "set":
            frame["args"][key] = value
        elif kind == "drop":
            frame["args"].pop(key, None)
        else:
            frame[key if key == "zz" else ("v", "id", "op", "args")[len(key) % 4]] = value
    try:
        parsed = parse_request(frame)
    except ProtocolError as exc:
        assert exc.code in ("bad_request", "too_large", "ttl_out_of_range", "unknown_op")
        event(f"error {exc.field}")
        return
    event(f"parsed {parsed.op}")
    assert parse_request(request_to_map(parsed)) == parsed
