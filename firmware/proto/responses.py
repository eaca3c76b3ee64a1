"""Response frames: the node encodes Ok/Err, the client parses and validates them.

``parse_response(frame, op=None)`` returns ``Ok`` or ``Err``; with ``op`` (the op the client sent
under that id) ``Ok.result`` is the typed result (StoreResult, RetrieveResult, ...), otherwise
the raw result map. Anything off-schema raises BadResponse: the client should drop the link.
"""

from dataclasses import dataclass

from . import _fields as f
from .errors import ERROR_CODES, BadResponse, error_for_code
from .frames import encode_frame
from .limits import (
    HASH_SIZE,
    KEY_SIZE,
    MAX_COUNT_LIMIT,
    MAX_DATA,
    MAX_ERROR_MSG,
    MAX_HASHES,
    MAX_REQUEST_ID,
    MAX_TEXT,
    PROTOCOL_VERSION,
    TIME_MAX,
    TIME_MIN,
)

__all__ = [
    "Ok",
    "Err",
    "StoreResult",
    "Message",
    "RetrieveResult",
    "DeleteResult",
    "ExpireResult",
    "InfoResult",
    "encode_ok",
    "encode_error",
    "parse_response",
    "parse_result",
]


@dataclass(frozen=True, slots=True)
class StoreResult:
    hash: bytes
    new: bool
    expiry: int
    replicas: int | None = None  # copies in the swarm that acknowledged (network nodes)

    def to_map(self):
        m = {"hash": self.hash, "new": self.new, "expiry": self.expiry}
        if self.replicas is not None:
            m["replicas"] = self.replicas
        return m


@dataclass(frozen=True, slots=True)
class Message:
    hash: bytes
    ts: int
    expiry: int
    data: bytes

    def to_map(self):
        return {"hash": self.hash, "ts": self.ts, "expiry": self.expiry, "data": self.data}


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    messages: tuple
    more: bool

    def to_map(self):
        return {"messages": [m.to_map() for m in self.messages], "more": self.more}


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: tuple

    def to_map(self):
        return {"deleted": list(self.deleted)}


@dataclass(frozen=True, slots=True)
class ExpireResult:
    updated: tuple

    def to_map(self):
        return {"updated": list(self.updated)}


@dataclass(frozen=True, slots=True)
class InfoResult:
    node_id: bytes
    version: str
    time: int
    state: str
    extra: dict  # further keys ("..." in docs/protocol.md), plain CBOR data

    def to_map(self):
        m = dict(self.extra)
        m.update(node_id=self.node_id, version=self.version, time=self.time, state=self.state)
        return m


@dataclass(frozen=True, slots=True)
class Ok:
    id: int
    result: object  # typed result when parsed with op, else the raw map


@dataclass(frozen=True, slots=True)
class Err:
    id: int | None
    code: str
    msg: str

    def exception(self):
        """The ProtocolError subclass for this code, for a client to raise."""
        return error_for_code(self.code, self.msg, request_id=self.id)


# -- node side ---------------------------------------------------------------------------------


def encode_ok(id, result):
    """Frame bytes of a success response; ``result`` is a *Result object or a map."""
    if hasattr(result, "to_map"):
        result = result.to_map()
    return encode_frame({"v": PROTOCOL_VERSION, "id": id, "ok": result})


def encode_error(id, code, msg):
    """Frame bytes of an error response; ``id`` None when the request id was unreadable."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}; use one of {sorted(ERROR_CODES)}")
    if len(msg) > MAX_ERROR_MSG:
        msg = msg[: MAX_ERROR_MSG - 3] + "..."
    return encode_frame({"v": PROTOCOL_VERSION, "id": id, "err": {"code": code, "msg": msg}})


# -- client side -------------------------------------------------------------------------------

_OK_KEYS = frozenset(("v", "id", "ok"))
_ERR_KEYS = frozenset(("v", "id", "err"))
_BAD = BadResponse


def _time(m, key):
    return f.get_int(m, key, TIME_MIN, TIME_MAX, _BAD, None)


def _store(m):
    f.check_keys(m, frozenset(("hash", "new", "expiry", "replicas")), _BAD, None, "store result")
    return StoreResult(f.get_bytes(m, "hash", HASH_SIZE, _BAD, None), f.get_bool(m, "new", _BAD, None),
                       _time(m, "expiry"),
                       f.get_int(m, "replicas", 0, 255, _BAD, None, default=None))  # fmt: skip


_MSG_KEYS = frozenset(("hash", "ts", "expiry", "data"))


def _message(m):
    if type(m) is not dict:
        raise BadResponse(f"retrieve result message must be a map, got {f.type_name(m)}")
    f.check_keys(m, _MSG_KEYS, _BAD, None, "message")
    data = m.get("data")
    if type(data) is not bytes or len(data) > MAX_DATA:
        raise BadResponse(f"message data must be bytes of at most {MAX_DATA}", field="data")
    return Message(f.get_bytes(m, "hash", HASH_SIZE, _BAD, None), _time(m, "ts"),
                   _time(m, "expiry"), data)  # fmt: skip


def _retrieve(m):
    f.check_keys(m, frozenset(("messages", "more")), _BAD, None, "retrieve result")
    msgs = m.get("messages")
    if type(msgs) is not list or len(msgs) > MAX_COUNT_LIMIT:
        raise BadResponse(f"must be an array of at most {MAX_COUNT_LIMIT} messages",
                          field="messages")  # fmt: skip
    return RetrieveResult(tuple(_message(x) for x in msgs), f.get_bool(m, "more", _BAD, None))


def _hash_list(key, cls):
    def parse(m):
        f.check_keys(m, frozenset((key,)), _BAD, None, f"{key} result")
        return cls(f.get_hash_list(m, key, HASH_SIZE, MAX_HASHES, _BAD, None, min_items=0))

    return parse


_INFO_KEYS = ("node_id", "version", "time", "state")


def _info(m):
    return InfoResult(
        f.get_bytes(m, "node_id", KEY_SIZE, _BAD, None),
        f.get_text(m, "version", MAX_TEXT, _BAD, None),
        _time(m, "time"),
        f.get_text(m, "state", MAX_TEXT, _BAD, None),
        {k: v for k, v in m.items() if k not in _INFO_KEYS},
    )


_RESULT_PARSERS = {
    "store": _store,
    "retrieve": _retrieve,
    "delete": _hash_list("deleted", DeleteResult),
    "expire": _hash_list("updated", ExpireResult),
    "info": _info,
}


def parse_result(op, result_map):
    """Validate the ``ok`` map of a response to ``op``; return its typed result."""
    try:
        parser = _RESULT_PARSERS[op]
    except KeyError:
        raise ValueError(f"unknown op {op!r}") from None
    return parser(result_map)


def parse_response(frame, op=None):
    """A decoded response frame -> Ok | Err; BadResponse if it breaks the schema."""
    v = frame.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise BadResponse(f"protocol version must be {PROTOCOL_VERSION}, got {v!r}", field="v")
    rid = frame.get("id", f.MISSING)
    if "err" in frame:
        f.check_keys(frame, _ERR_KEYS, _BAD, None, "error response")
        if rid is not None:
            rid = f.get_int(frame, "id", 0, MAX_REQUEST_ID, _BAD, None)
        err = frame["err"]
        if type(err) is not dict:
            raise BadResponse(f"must be a map, got {f.type_name(err)}", field="err")
        f.check_keys(err, frozenset(("code", "msg")), _BAD, None, "err")
        return Err(rid, f.get_text(err, "code", MAX_TEXT, _BAD, None),
                   f.get_text(err, "msg", MAX_ERROR_MSG, _BAD, None))  # fmt: skip
    f.check_keys(frame, _OK_KEYS, _BAD, None, "response")
    rid = f.get_int(frame, "id", 0, MAX_REQUEST_ID, _BAD, None)
    result = frame.get("ok")
    if type(result) is not dict:
        raise BadResponse(f"must be a map, got {f.type_name(result)}", field="ok")
    if op is not None:
        result = parse_result(op, result)
    return Ok(rid, result)
