"""The ProtocolError family: every wire error code of docs/protocol.md as a class.

Why classes and not bare strings: the decoder and schema raise them, the node catches one base
class and turns it into an error frame with ``encode_error(exc.request_id, exc.code, str(exc))``,
and the client maps an error frame back to the same class with :func:`error_for_code`.

``fatal`` says whether the link must be closed after answering (the byte stream can no longer be
trusted); request-level errors leave the link usable.
"""

__all__ = [
    "ProtocolError",
    "MalformedFrame",
    "FrameTooLarge",
    "BadResponse",
    "BadRequest",
    "DataTooLarge",
    "TtlOutOfRange",
    "UnknownOp",
    "BadSignature",
    "StaleSignature",
    "RateLimited",
    "StorageFull",
    "Busy",
    "WriteBudgetSpent",
    "InternalError",
    "OnionRejected",
    "ERROR_CODES",
    "error_for_code",
]


class ProtocolError(Exception):
    """Base class: something a peer sent (or we are about to send) breaks docs/protocol.md."""

    code = "internal"
    fatal = False

    def __init__(self, msg, *, field=None, request_id=None):
        super().__init__(msg)
        self.msg = msg
        self.field = field
        self.request_id = request_id

    def __repr__(self):
        extra = f", field={self.field!r}" if self.field is not None else ""
        return f"{type(self).__name__}({self.msg!r}{extra})"


# -- framing: the byte stream is broken; answer once (id null) and close the link ------------


class MalformedFrame(ProtocolError):
    """Bad length, bad CBOR, a non-map body, trailing bytes, forbidden tags, too deep nesting."""

    code = "bad_frame"
    fatal = True


class FrameTooLarge(MalformedFrame):
    """The 4-byte length header announces more than the frame limit (1 MiB)."""

    code = "too_large"


class BadResponse(MalformedFrame):
    """Client side: a response frame that does not follow the response schema."""


# -- request level: answer with an error frame carrying the request id, keep the link ---------


class BadRequest(ProtocolError):
    """Schema violation: wrong type, size or range. ``field`` names the offending field."""

    code = "bad_request"

    def __init__(self, msg, *, field=None, request_id=None):
        if field is not None and not msg.startswith(field):
            msg = f"{field}: {msg}"
        super().__init__(msg, field=field, request_id=request_id)


class DataTooLarge(BadRequest):
    """``data`` is longer than MAX_DATA (76,800 bytes)."""

    code = "too_large"


class TtlOutOfRange(BadRequest):
    """``ttl`` outside the namespace's range (10 s..14 days in ns 0, 10 s..30 days elsewhere)."""

    code = "ttl_out_of_range"


class UnknownOp(BadRequest):
    """``op`` is not one this node implements."""

    code = "unknown_op"


class BadSignature(BadRequest):
    """``sig`` does not verify against ``recipient`` over the signed bytes."""

    code = "bad_signature"


class StaleSignature(BadRequest):
    """``sig_ts`` is more than 60 s away from the node's clock."""

    code = "stale_signature"


# -- node conditions (raised by the node, not by proto; here so both ends share one table) ----


class RateLimited(ProtocolError):
    code = "rate_limited"


class StorageFull(ProtocolError):
    code = "full"


class Busy(ProtocolError):
    code = "busy"


class WriteBudgetSpent(ProtocolError):
    code = "write_budget"


class InternalError(ProtocolError):
    code = "internal"


_ONION_REJECTED = (
    "onion layer rejected (it could not be opened, or it is malformed, stale or replayed); "
    "build a fresh onion with current node keys and the right clock"
)


class OnionRejected(BadRequest):
    """The one error a hop gives for any bad onion layer. Deliberately says nothing specific
    (which check failed would help an attacker probe a node's keys or replay cache)."""

    code = "onion_rejected"

    def __init__(self, msg=_ONION_REJECTED, *, request_id=None):
        super().__init__(_ONION_REJECTED, request_id=request_id)


_BY_CODE = {
    cls.code: cls
    for cls in (
        MalformedFrame,
        FrameTooLarge,
        BadRequest,
        TtlOutOfRange,
        UnknownOp,
        BadSignature,
        StaleSignature,
        RateLimited,
        StorageFull,
        Busy,
        WriteBudgetSpent,
        InternalError,
        OnionRejected,
    )
}
# "too_large" is shared by FrameTooLarge and DataTooLarge; a client receiving it in an error
# frame for a request it sent means the request was refused, so map it to DataTooLarge.
_BY_CODE["too_large"] = DataTooLarge

ERROR_CODES = frozenset(_BY_CODE)


def error_for_code(code, msg, *, request_id=None):
    """The exception a client raises for an error frame; unknown codes become InternalError."""
    cls = _BY_CODE.get(code, InternalError)
    if cls is InternalError and code != "internal":
        msg = f"[{code}] {msg}"
    return cls(msg, request_id=request_id)
