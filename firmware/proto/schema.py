"""Typed storage-RPC requests: parse and validate a decoded frame, or encode one.

``parse_request`` checks everything that does not depend on the clock (types, sizes, ranges,
unknown keys) and raises BadRequest (or a subclass) naming the field, with ``request_id`` set
when the id itself was readable. Checks that need "now" are separate functions taking
``now_ms`` so this module never reads a clock: ``check_store_times``, ``check_expire_times``,
``check_signature``.
"""

from dataclasses import dataclass
from typing import ClassVar

from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from . import _fields as f
from .errors import (
    BadRequest,
    BadSignature,
    DataTooLarge,
    StaleSignature,
    TtlOutOfRange,
    UnknownOp,
)
from .frames import encode_frame
from .hashing import message_hash, op_binding, signed_bytes
from .limits import (
    HASH_SIZE,
    KEY_SIZE,
    MAX_BYTES_DEFAULT,
    MAX_BYTES_LIMIT,
    MAX_COUNT_DEFAULT,
    MAX_COUNT_LIMIT,
    MAX_DATA,
    MAX_FUTURE_TS,
    MAX_HASHES,
    MAX_REQUEST_ID,
    NS_MAX,
    NS_MIN,
    PROTOCOL_VERSION,
    PUBLIC_NS,
    SIG_SIZE,
    SIG_WINDOW,
    TIME_MAX,
    TIME_MIN,
    TTL_MIN,
    max_ttl,
)

__all__ = [
    "StoreRequest",
    "RetrieveRequest",
    "DeleteRequest",
    "ExpireRequest",
    "InfoRequest",
    "REQUEST_TYPES",
    "parse_request",
    "request_to_map",
    "encode_request",
    "check_store_times",
    "check_expire_times",
    "check_signature",
    "request_binding",
]

_BR = BadRequest


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """Deposit ``data`` for ``recipient``; ns 0 needs no signature, every other ns does."""

    op: ClassVar[str] = "store"
    id: int
    recipient: bytes
    ns: int
    ts: int
    ttl: int
    data: bytes
    sig_ts: int | None = None
    sig: bytes | None = None

    @property
    def expiry(self):
        return self.ts + self.ttl


@dataclass(frozen=True, slots=True)
class RetrieveRequest:
    op: ClassVar[str] = "retrieve"
    id: int
    recipient: bytes
    ns: int
    sig_ts: int
    sig: bytes
    after: bytes | None = None
    max_count: int = MAX_COUNT_DEFAULT
    max_bytes: int = MAX_BYTES_DEFAULT


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    op: ClassVar[str] = "delete"
    id: int
    recipient: bytes
    ns: int
    hashes: tuple
    sig_ts: int
    sig: bytes


@dataclass(frozen=True, slots=True)
class ExpireRequest:
    op: ClassVar[str] = "expire"
    id: int
    recipient: bytes
    ns: int
    hashes: tuple
    expiry: int
    sig_ts: int
    sig: bytes


@dataclass(frozen=True, slots=True)
class InfoRequest:
    op: ClassVar[str] = "info"
    id: int


REQUEST_TYPES = {
    cls.op: cls
    for cls in (StoreRequest, RetrieveRequest, DeleteRequest, ExpireRequest, InfoRequest)
}

# -- parsing -----------------------------------------------------------------------------------

_TOP_KEYS = frozenset(("v", "id", "op", "args"))


def _common(args, rid):
    recipient = f.get_bytes(args, "recipient", KEY_SIZE, _BR, rid)
    ns = f.get_int(args, "ns", NS_MIN, NS_MAX, _BR, rid)
    return recipient, ns


def _sig(args, rid):
    sig_ts = f.get_int(args, "sig_ts", TIME_MIN, TIME_MAX, _BR, rid)
    sig = f.get_bytes(args, "sig", SIG_SIZE, _BR, rid)
    return sig_ts, sig


_STORE_KEYS = frozenset(("recipient", "ns", "ts", "ttl", "data", "sig_ts", "sig"))


def _parse_store(rid, args):
    f.check_keys(args, _STORE_KEYS, _BR, rid, "store args")
    recipient, ns = _common(args, rid)
    ts = f.get_int(args, "ts", TIME_MIN, TIME_MAX, _BR, rid)
    ttl = args.get("ttl", f.MISSING)
    if type(ttl) is not int:  # a type error is bad_request; only a range error is ttl_out_of_range
        what = "missing" if ttl is f.MISSING else f"got {f.type_name(ttl)}"
        raise BadRequest(f"must be an integer {TTL_MIN}..{max_ttl(ns)} (ms), {what}", field="ttl",
                         request_id=rid)
    if not TTL_MIN <= ttl <= max_ttl(ns):
        raise TtlOutOfRange(f"{ttl} is out of range, must be {TTL_MIN}..{max_ttl(ns)} (ms) in "
                            f"namespace {ns}", field="ttl", request_id=rid)
    if ts > TIME_MAX - ttl:
        raise BadRequest(f"ts + ttl overflows {TIME_MAX}; send a real time", field="ts",
                         request_id=rid)  # fmt: skip
    data = args.get("data", f.MISSING)
    if type(data) is not bytes:
        what = "missing" if data is f.MISSING else f"got {f.type_name(data)}"
        raise BadRequest(f"must be bytes, {what}", field="data", request_id=rid)
    if len(data) > MAX_DATA:
        raise DataTooLarge(
            f"is {len(data)} bytes, at most {MAX_DATA} allowed; split the message",
            field="data",
            request_id=rid,
        )
    if ns == PUBLIC_NS:
        for key in ("sig_ts", "sig"):
            if key in args:
                raise BadRequest(
                    "not allowed in a store to the public inbox (ns 0); drop sig_ts and sig",
                    field=key,
                    request_id=rid,
                )
        return StoreRequest(rid, recipient, ns, ts, ttl, data)
    sig_ts, sig = _sig(args, rid)
    return StoreRequest(rid, recipient, ns, ts, ttl, data, sig_ts, sig)


_RETRIEVE_KEYS = frozenset(("recipient", "ns", "after", "max_count", "max_bytes", "sig_ts", "sig"))


def _parse_retrieve(rid, args):
    f.check_keys(args, _RETRIEVE_KEYS, _BR, rid, "retrieve args")
    recipient, ns = _common(args, rid)
    after = args.get("after")
    if after is not None:
        after = f.get_bytes(args, "after", HASH_SIZE, _BR, rid)
    max_count = f.get_int(args, "max_count", 1, MAX_COUNT_LIMIT, _BR, rid, MAX_COUNT_DEFAULT)
    max_bytes = f.get_int(args, "max_bytes", 1, MAX_BYTES_LIMIT, _BR, rid, MAX_BYTES_DEFAULT)
    sig_ts, sig = _sig(args, rid)
    return RetrieveRequest(rid, recipient, ns, sig_ts, sig, after, max_count, max_bytes)


_DELETE_KEYS = frozenset(("recipient", "ns", "hashes", "sig_ts", "sig"))


def _parse_delete(rid, args):
    f.check_keys(args, _DELETE_KEYS, _BR, rid, "delete args")
    recipient, ns = _common(args, rid)
    hashes = f.get_hash_list(args, "hashes", HASH_SIZE, MAX_HASHES, _BR, rid)
    sig_ts, sig = _sig(args, rid)
    return DeleteRequest(rid, recipient, ns, hashes, sig_ts, sig)


_EXPIRE_KEYS = frozenset(("recipient", "ns", "hashes", "expiry", "sig_ts", "sig"))


def _parse_expire(rid, args):
    f.check_keys(args, _EXPIRE_KEYS, _BR, rid, "expire args")
    recipient, ns = _common(args, rid)
    hashes = f.get_hash_list(args, "hashes", HASH_SIZE, MAX_HASHES, _BR, rid)
    expiry = f.get_int(args, "expiry", TIME_MIN, TIME_MAX, _BR, rid)
    sig_ts, sig = _sig(args, rid)
    return ExpireRequest(rid, recipient, ns, hashes, expiry, sig_ts, sig)


def _parse_info(rid, args):
    f.check_keys(args, frozenset(), _BR, rid, "info args")
    return InfoRequest(rid)


_PARSERS = {
    "store": _parse_store,
    "retrieve": _parse_retrieve,
    "delete": _parse_delete,
    "expire": _parse_expire,
    "info": _parse_info,
}


def parse_request(frame):
    """A decoded request frame (dict) -> StoreRequest | RetrieveRequest | ... ; or BadRequest."""
    rid = frame.get("id", f.MISSING)
    if type(rid) is not int or not 0 <= rid <= MAX_REQUEST_ID:
        what = "missing" if rid is f.MISSING else f"got {rid!r}"
        raise BadRequest(f"must be an integer 0..{MAX_REQUEST_ID}, {what}", field="id")
    v = frame.get("v", f.MISSING)
    if type(v) is not int or v != PROTOCOL_VERSION:
        what = "missing" if v is f.MISSING else f"got {v!r}"
        raise BadRequest(
            f"protocol version must be {PROTOCOL_VERSION}, {what}; upgrade the client or node",
            field="v",
            request_id=rid,
        )
    f.check_keys(frame, _TOP_KEYS, _BR, rid, "request")
    op = frame.get("op", f.MISSING)
    if type(op) is not str:
        what = "missing" if op is f.MISSING else f"got {f.type_name(op)}"
        raise BadRequest(f"must be text naming the operation, {what}", field="op", request_id=rid)
    args = frame.get("args", f.MISSING)
    if type(args) is not dict:
        what = "missing" if args is f.MISSING else f"got {f.type_name(args)}"
        raise BadRequest(f"must be a map, {what}", field="args", request_id=rid)
    parser = _PARSERS.get(op)
    if parser is None:
        raise UnknownOp(
            f"unknown operation {op[:40]!r}; this node supports {', '.join(_PARSERS)}",
            field="op",
            request_id=rid,
        )
    return parser(rid, args)


# -- encoding (client side) --------------------------------------------------------------------


def request_to_map(req):
    """The wire map of a request object (no validation; see encode_request)."""
    op = req.op
    if op == "info":
        args = {}
    elif op == "store":
        args = {"recipient": req.recipient, "ns": req.ns, "ts": req.ts, "ttl": req.ttl,
                "data": req.data}  # fmt: skip
        if req.sig is not None or req.sig_ts is not None:
            args["sig_ts"] = req.sig_ts
            args["sig"] = req.sig
    elif op == "retrieve":
        args = {"recipient": req.recipient, "ns": req.ns, "after": req.after,
                "max_count": req.max_count, "max_bytes": req.max_bytes,
                "sig_ts": req.sig_ts, "sig": req.sig}  # fmt: skip
    elif op == "delete":
        args = {"recipient": req.recipient, "ns": req.ns, "hashes": list(req.hashes),
                "sig_ts": req.sig_ts, "sig": req.sig}  # fmt: skip
    elif op == "expire":
        args = {"recipient": req.recipient, "ns": req.ns, "hashes": list(req.hashes),
                "expiry": req.expiry, "sig_ts": req.sig_ts, "sig": req.sig}  # fmt: skip
    else:
        raise TypeError(f"not a request object: {req!r}")
    return {"v": PROTOCOL_VERSION, "id": req.id, "op": op, "args": args}


def encode_request(req):
    """Validate a request object exactly as a node would, then return its frame bytes.

    Raises the same BadRequest a node would answer with, before anything is sent.
    """
    m = request_to_map(req)
    parse_request(m)
    return encode_frame(m)


# -- checks that need the node's clock ---------------------------------------------------------


def check_store_times(req, now_ms):
    """A store's ts may be at most 60 s ahead of ``now_ms`` and ts + ttl must be after it."""
    if req.ts > now_ms + MAX_FUTURE_TS:
        raise BadRequest(
            f"{req.ts} is {req.ts - now_ms} ms ahead of the node clock ({now_ms}), at most "
            f"{MAX_FUTURE_TS} allowed; fix the client clock",
            field="ts",
            request_id=req.id,
        )
    if req.ts + req.ttl <= now_ms:
        raise BadRequest(
            f"message already expired: ts + ttl = {req.ts + req.ttl} <= node clock {now_ms}; "
            "send a current ts or a longer ttl",
            field="ts",
            request_id=req.id,
        )


def check_expire_times(req, now_ms):
    """The new expiry must be in the future and at most now + max_ttl(ns), else no message
    could take it (`ttl_out_of_range`). The per-message cap ts + max_ttl(ns) is the node's:
    a message it would take beyond its own cap is left as it is and not listed as updated."""
    if req.expiry <= now_ms:
        raise BadRequest(
            f"{req.expiry} is not in the future (node clock {now_ms}); to drop messages now use "
            "delete",
            field="expiry",
            request_id=req.id,
        )
    latest = now_ms + max_ttl(req.ns)
    if req.expiry > latest:
        raise TtlOutOfRange(
            f"{req.expiry} is {req.expiry - now_ms} ms from the node clock ({now_ms}); at most "
            f"{max_ttl(req.ns)} ms (the longest ttl in namespace {req.ns}) allowed",
            field="expiry",
            request_id=req.id,
        )


_BOUND = {"store": "and the message hash", "delete": "and the hashes",
          "expire": "and the hashes and expiry"}


def request_binding(req):
    """The op-specific part of what ``req.sig`` signs (firmware.proto.hashing.op_binding)."""
    if req.op == "store":
        return op_binding("store", msg_hash=message_hash(req.recipient, req.ns, req.ts, req.data))
    if req.op == "delete":
        return op_binding("delete", hashes=req.hashes)
    if req.op == "expire":
        return op_binding("expire", hashes=req.hashes, expiry=req.expiry)
    return b""


def check_signature(req, now_ms):
    """Verify ``sig`` (and that sig_ts is within +-60 s of ``now_ms``) for ops that carry one.

    A no-op for info and for stores to the public inbox (ns 0).
    """
    sig = getattr(req, "sig", None)
    if sig is None:
        if req.op in ("info", "store") and getattr(req, "ns", PUBLIC_NS) == PUBLIC_NS:
            return
        raise BadSignature("signature required", field="sig", request_id=req.id)
    skew = req.sig_ts - now_ms
    if not -SIG_WINDOW <= skew <= SIG_WINDOW:
        raise StaleSignature(
            f"{req.sig_ts} is {skew:+d} ms from the node clock ({now_ms}), at most "
            f"+-{SIG_WINDOW} allowed; sign with a fresh sig_ts and check the client clock",
            field="sig_ts",
            request_id=req.id,
        )
    msg = signed_bytes(req.op, req.recipient, req.ns, req.sig_ts, request_binding(req))
    try:
        crypto_sign_open(sig + msg, req.recipient)
    except (CryptoError, ValueError, TypeError):
        raise BadSignature(
            f"does not verify for this recipient over {req.op}/ns {req.ns}/sig_ts {req.sig_ts} "
            f"{_BOUND.get(req.op, '')}; sign with the recipient's key the bytes given in "
            "docs/protocol.md (v2)",
            field="sig",
            request_id=req.id,
        ) from None
