"""Safe CBOR decoding of untrusted bodies: what is refused and that it is refused cheaply."""

import struct
import tracemalloc

import cbor2
import pytest

from firmware.proto import MalformedFrame, decode_map, encode_map
from firmware.proto import codec as codec_module
from firmware.proto.limits import MAX_DEPTH


def tag(n, inner):
    if n < 24:
        head = bytes([0xC0 | n])
    elif n < 256:
        head = bytes([0xD8, n])
    elif n < 65536:
        head = b"\xd9" + struct.pack(">H", n)
    else:
        head = b"\xda" + struct.pack(">I", n)
    return head + inner


def in_map(item):
    return b"\xa1\x61a" + item  # {"a": item}


@pytest.fixture
def mode():
    """(cbor2 >= 6 enforces the subset itself; there is no other decoding mode any more.)"""
    return "cbor2"


INNERS = [b"\x00", b"\x62a*", b"\x40", b"\xa0", b"\x80", b"\x82\x00\x00"]


def test_plain_data_round_trips(mode):
    m = {"t": "ü", "b": b"\x00\xff", "i": -(2**63), "u": 2**64 - 1, "l": [1, [2]], "n": None,
         "f": False, "m": {"x": {}}}  # fmt: skip
    assert decode_map(encode_map(m)) == m


def test_builtin_tag_list_is_complete():
    """Every tag plain cbor2 turns into a Python object must be in our refusal list."""
    builtin = set()
    for n in list(range(70000)) + [2**32 - 1, 0xD9D9F7, 1_000_000]:
        for inner in INNERS:
            try:
                obj = cbor2.loads(tag(n, inner))
            except Exception:
                builtin.add(n)  # cbor2 looked inside: it has a decoder for this tag
                continue
            if not isinstance(obj, cbor2.CBORTag):
                builtin.add(n)
    assert builtin <= set(codec_module._BUILTIN_TAGS), sorted(builtin)
    assert {1, 2, 28, 29, 35, 258, 55799} <= builtin  # the probe finds the known ones


@pytest.mark.parametrize("n", codec_module._BUILTIN_TAGS + (6, 24, 255, 256, 65535, 2**32 - 1))
@pytest.mark.parametrize("inner", INNERS)
def test_every_builtin_and_some_unknown_tags_are_refused(n, inner, mode):
    with pytest.raises(MalformedFrame, match="tag|not valid CBOR"):
        decode_map(in_map(tag(n, inner)))


def test_all_small_tags_refused():
    for n in range(70000):
        with pytest.raises(MalformedFrame):
            decode_map(in_map(tag(n, b"\x62a*")))


def test_tag_message_names_the_tag(mode):
    with pytest.raises(MalformedFrame, match="CBOR tag 35 is not allowed"):
        decode_map(in_map(tag(35, b"\x62a*")))
    with pytest.raises(MalformedFrame, match="CBOR tag 1000 is not allowed"):
        decode_map(in_map(tag(1000, b"\x00")))


def test_cyclic_shared_reference_refused(mode):
    # 28(array[29(0)]): an array containing itself
    with pytest.raises(MalformedFrame):
        decode_map(in_map(b"\xd8\x1c\x81\xd8\x1d\x00"))


def test_nesting_depth_bound(mode):
    ok = in_map(b"\x81" * (MAX_DEPTH - 1) + b"\x00")  # map + 15 arrays = 16 containers
    assert decode_map(ok)["a"] is not None
    with pytest.raises(MalformedFrame, match="depth"):
        decode_map(in_map(b"\x81" * MAX_DEPTH + b"\x00"))


def test_very_deep_nesting_is_a_protocol_error_not_recursion(mode):
    with pytest.raises(MalformedFrame):
        decode_map(b"\xa1\x61a" * 200_000 + b"\x00")


@pytest.mark.parametrize(
    "head",
    [
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # bytes, 2**64-1 long
        b"\x7b\x00\x00\x00\x00\xff\xff\xff\xff",  # text, 4 GiB
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # array
        b"\xbb\xff\xff\xff\xff\xff\xff\xff\xff",  # map
        b"\x5a\x00\x10\x00\x00",  # bytes, 1 MiB declared, 3 present
    ],
)
def test_huge_declared_lengths_fail_without_allocating(head, mode):
    body = in_map(head + b"abc")
    tracemalloc.start()
    try:
        with pytest.raises(MalformedFrame):
            decode_map(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


@pytest.mark.parametrize(
    "body, match",
    [
        (b"\xa2\x61a\x00\x61a\x01", "(?i)duplicate"),
        (b"\xa1\x01\x00", "key"),  # int key
        (b"\xa1\xa0\x00", "key"),  # map key
        (b"\xbf\x61a\x00\xff", "indefinite"),  # indefinite map
        (b"\xa1\x61a\x5f\x41\x00\xff", "indefinite"),  # indefinite bytes
        (b"\xa1\x61a\x62\xc3\x28", "not valid CBOR"),  # invalid UTF-8
        (b"\xa1\x61a\x1c", "not valid CBOR"),  # reserved additional info
        (b"\xa0\xa0", "trailing"),
        (b"\x60", "must be a CBOR map"),
        (b"\xf6", "must be a CBOR map"),
        (b"", "not valid CBOR|must be a CBOR map"),
    ],
)
def test_refused_shapes(body, match, mode):
    with pytest.raises(MalformedFrame, match=match):
        decode_map(body)


def test_what_names_the_thing(mode):
    with pytest.raises(MalformedFrame, match="^onion layer body must be a CBOR map"):
        decode_map(b"\x80", what="onion layer")


def test_bytes_map_keys_allowed_but_not_ints(mode):
    assert decode_map(b"\xa1\x41k\x00") == {b"k": 0}


def test_encode_map_wants_a_dict():
    with pytest.raises(TypeError):
        encode_map([1])


