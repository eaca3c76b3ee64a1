"""Safe CBOR for untrusted bytes: one map in, plain Python data out, or MalformedFrame.

cbor2 turns many semantic tags into live Python objects (tag 35 compiles a regex, 28/29 build
shared and cyclic references, 2/3 bignums, 1 datetimes, 258 sets, 36 MIME parsing...). None of
that belongs in this protocol, and some of it is a denial-of-service handle, so **every tag is
refused**: unknown tags through ``tag_hook``, cbor2's built-in ones by overriding them in
``semantic_decoders`` (cbor2 >= 6, which pyproject.toml and the image's pinned wheels require).
Also refused: indefinite lengths (we never send them),
nesting deeper than MAX_DEPTH, duplicate map keys (ambiguous), map keys other than text/bytes
(int keys allow hash-collision floods), trailing bytes after the map. Huge declared lengths are
cut off by cbor2 reading only what is there (an EOF error, no allocation up front).

What can still come out: dict, list, str, bytes, int (64-bit range at most), bool, None, float,
cbor2's ``undefined`` and ``CBORSimpleValue``. The schema layer checks exact types, so the last
ones never get past it.
"""

import io

import cbor2

from .errors import MalformedFrame
from .limits import MAX_DEPTH

__all__ = ["encode_map", "decode_map"]

# Tags cbor2 6.x decodes by itself (found by probing every tag 0..69999 plus a few large ones,
# see tests/proto/test_codec.py::test_every_builtin_tag_is_refused).
_BUILTIN_TAGS = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
    43000, 55799,
)  # fmt: skip


class _TagRefused(Exception):
    pass


def _refuse_tag(*args):
    # cbor2 6 calls tag_hook(decoder, tag)
    number = next((a.tag for a in args if isinstance(a, cbor2.CBORTag)), "?")
    raise _TagRefused(f"CBOR tag {number} is not allowed")


def _semantic_refuser(tag):
    def refuse(decoder, *args):
        raise _TagRefused(f"CBOR tag {tag} is not allowed")

    return refuse


# cbor2's max_depth counts containers that hold something: an empty array or map inside
# `max_depth` others passes, one level deeper than docs/protocol.md allows (at most 16
# containers around any value, empty ones included). So cbor2 gets one level less, and a frame
# it refuses for depth alone (a 16-deep shape, which no legit request has) is decoded again
# with one level more and its containers counted exactly: exact, and free on the hot path.
_DECODER_OPTIONS = {
    "tag_hook": _refuse_tag,
    "semantic_decoders": {tag: _semantic_refuser(tag) for tag in _BUILTIN_TAGS},
    "max_depth": MAX_DEPTH - 1,
    "allow_indefinite": False,
    "allow_duplicate_keys": False,
    "strict_hashable_types": True,
}
_DEEP_OPTIONS = {**_DECODER_OPTIONS, "max_depth": MAX_DEPTH}
_DEPTH_ERROR = "maximum container nesting depth"


def _refusal_reason(exc):
    """Our own refusal message if one is in the cause chain, else cbor2's."""
    cause = exc
    for _ in range(8):
        if isinstance(cause, _TagRefused):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
        if cause is None:
            break
    return str(exc)


_Decoder = cbor2.CBORDecoder
_BytesIO = io.BytesIO


def decode_map(body, what="frame"):
    """Decode ``body`` (bytes-like) that must hold exactly one CBOR map; return it as a dict.

    Raises MalformedFrame (only) on anything else. ``what`` names the thing in messages.
    """
    fp = _BytesIO(body)
    deep = False
    try:
        try:
            obj = _Decoder(fp, **_DECODER_OPTIONS).decode()
        except cbor2.CBORDecodeError as exc:
            if _DEPTH_ERROR not in str(exc):
                raise
            fp = _BytesIO(body)
            obj = _Decoder(fp, **_DEEP_OPTIONS).decode()
            deep = True
    except cbor2.CBORDecodeError as exc:
        detail = _refusal_reason(exc)
        raise MalformedFrame(
            f"{what} body is not valid CBOR for this protocol ({detail}); send one CBOR map "
            "with text keys, definite lengths, no tags"
        ) from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError, LookupError) as exc:
        raise MalformedFrame(
            f"{what} body is not valid CBOR for this protocol ({type(exc).__name__}: {exc}); "
            "send one CBOR map with text keys, definite lengths, no tags"
        ) from None
    if type(obj) is not dict:
        raise MalformedFrame(
            f"{what} body must be a CBOR map, got {type(obj).__name__}; wrap the message in a map"
        )
    if fp.tell() != len(body):
        raise MalformedFrame(
            f"{what} body has {len(body) - fp.tell()} trailing bytes after the CBOR map; "
            "put exactly one map in a frame"
        )
    if deep and _container_depth(obj) > MAX_DEPTH:
        raise MalformedFrame(
            f"{what} body is not valid CBOR for this protocol (maximum container nesting depth "
            f"({MAX_DEPTH}) exceeded); send one CBOR map with text keys, definite lengths, no tags"
        )
    return obj


def _container_depth(obj):
    """Containers on the deepest path through `obj`, empty ones included (only reached for a
    frame at least MAX_DEPTH deep, so at most MAX_DEPTH + 1 levels)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if type(item) is dict:
            children = item.values()
        elif type(item) is list:
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def encode_map(obj):
    """CBOR-encode a map (dict) to bytes. Only plain data: dict/list/tuple/str/bytes/int/bool/None."""
    if not isinstance(obj, dict):
        raise TypeError(f"expected a dict to encode, got {type(obj).__name__}")
    return cbor2.dumps(obj)
