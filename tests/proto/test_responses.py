"""Response frames: node-side encoding, client-side parsing and validation."""

import pytest

from firmware.proto import (
    ERROR_CODES,
    BadRequest,
    BadResponse,
    DataTooLarge,
    DeleteResult,
    Err,
    ExpireResult,
    FrameDecoder,
    InfoResult,
    InternalError,
    Message,
    Ok,
    RetrieveResult,
    StaleSignature,
    StorageFull,
    StoreResult,
    encode_error,
    encode_ok,
    parse_request,
    parse_response,
)

H = b"\x33" * 32


def decode_one(frame_bytes):
    dec = FrameDecoder()
    dec.receive_data(frame_bytes)
    return dec.next_event()


RESULTS = [
    ("store", StoreResult(H, True, 123)),
    ("retrieve", RetrieveResult((Message(H, 1, 2, b"d"), Message(b"\x44" * 32, 3, 4, b"")), True)),
    ("retrieve", RetrieveResult((), False)),
    ("delete", DeleteResult((H,))),
    ("delete", DeleteResult(())),
    ("expire", ExpireResult((H, b"\x55" * 32))),
    ("info", InfoResult(H, "0.1.0", 99, "healthy", {"uptime": 5})),
]


@pytest.mark.parametrize("op, result", RESULTS)
def test_ok_round_trip(op, result):
    frame = decode_one(encode_ok(7, result))
    assert parse_response(frame, op) == Ok(7, result)
    assert parse_response(frame) == Ok(7, result.to_map())


def test_ok_from_plain_map():
    assert decode_one(encode_ok(1, {"hash": H, "new": False, "expiry": 5})) == {
        "v": 2, "id": 1, "ok": {"hash": H, "new": False, "expiry": 5}}  # fmt: skip


def test_error_round_trip_and_exception():
    exc = BadRequest("must be 32 bytes", field="recipient", request_id=9)
    frame = decode_one(encode_error(exc.request_id, exc.code, str(exc)))
    err = parse_response(frame, "store")
    assert err == Err(9, "bad_request", "recipient: must be 32 bytes")
    raised = err.exception()
    assert type(raised) is BadRequest and raised.request_id == 9


def test_error_with_null_id():
    assert parse_response(decode_one(encode_error(None, "bad_frame", "x"))) == Err(
        None, "bad_frame", "x"
    )


@pytest.mark.parametrize(
    "code, cls",
    [("stale_signature", StaleSignature), ("full", StorageFull), ("too_large", DataTooLarge),
     ("something_new", InternalError)],
)  # fmt: skip
def test_error_codes_map_to_classes(code, cls):
    exc = Err(1, code, "m").exception()
    assert type(exc) is cls


def test_every_code_is_encodable_and_unknown_is_not():
    for code in ERROR_CODES:
        assert parse_response(decode_one(encode_error(1, code, "m"))).code == code
    with pytest.raises(ValueError, match="unknown error code"):
        encode_error(1, "oops", "m")


def test_long_error_message_truncated():
    frame = decode_one(encode_error(1, "internal", "x" * 10_000))
    assert len(frame["err"]["msg"]) == 4096


@pytest.mark.parametrize(
    "frame, op",
    [
        ({"v": 1, "id": 1, "ok": {}}, None),  # v1 is another protocol now
        ({"v": 2, "id": 1, "ok": []}, None),
        ({"v": 2, "id": -1, "ok": {}}, None),
        ({"v": 2, "id": True, "ok": {}}, None),
        ({"v": 2, "ok": {}}, None),
        ({"v": 2, "id": 1, "ok": {}, "err": {"code": "x", "msg": "y"}}, None),
        ({"v": 2, "id": 1, "err": {"code": 1, "msg": "y"}}, None),
        ({"v": 2, "id": 1, "err": {"code": "x"}}, None),
        ({"v": 2, "id": 1, "err": "x"}, None),
        ({"v": 2, "id": 1, "ok": {"hash": H, "new": 1, "expiry": 5}}, "store"),
        ({"v": 2, "id": 1, "ok": {"hash": H[:5], "new": True, "expiry": 5}}, "store"),
        ({"v": 2, "id": 1, "ok": {"hash": H, "new": True, "expiry": 5, "x": 1}}, "store"),
        (
            {
                "v": 2,
                "id": 1,
                "ok": {"messages": [{"hash": H, "ts": 1, "expiry": 2}], "more": False},
            },
            "retrieve",
        ),  # fmt: skip
        ({"v": 2, "id": 1, "ok": {"messages": [1], "more": False}}, "retrieve"),
        (
            {
                "v": 2,
                "id": 1,
                "ok": {
                    "messages": [{"hash": H, "ts": 1, "expiry": 2, "data": b"x" * 76_801}],
                    "more": False,
                },
            },
            "retrieve",
        ),  # fmt: skip
        ({"v": 2, "id": 1, "ok": {"deleted": [b"x"]}}, "delete"),
        ({"v": 2, "id": 1, "ok": {"updated": H}}, "expire"),
        ({"v": 2, "id": 1, "ok": {"node_id": H, "version": 1, "time": 1, "state": "x"}}, "info"),
    ],
)
def test_bad_responses(frame, op):
    with pytest.raises(BadResponse):
        parse_response(frame, op)


def test_request_is_not_a_response_and_vice_versa():
    with pytest.raises(BadResponse):
        parse_response({"v": 2, "id": 1, "op": "info", "args": {}})
    with pytest.raises(BadRequest):
        parse_request(decode_one(encode_ok(1, {})))
