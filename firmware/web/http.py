"""HTTP/1.1 for the status page, sans-IO: bytes in, a `Request` or an `HttpError` out; a status,
headers and body in, response bytes out.

Why our own and this small: the page serves a handful of GETs and one tiny POST to browsers on
the LAN, and every byte a stranger sends must be bounded before it is buffered. The parser keeps
at most `max_head` bytes of request line + headers and `max_body` of body, refuses what it does
not need (chunked bodies, obs-folded headers, HTTP/2 prefaces) with the right status, and the
server answers one request per connection (`Connection: close`), so no pipelining state exists.
"""

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

REASONS = {
    200: "OK", 204: "No Content", 303: "See Other", 400: "Bad Request", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
    421: "Misdirected Request", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class HttpError(Exception):
    """The request cannot be served; `status` is the answer to send before closing."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict
    headers: dict  # lower-case name -> value (a repeated header keeps its last value)
    body: bytes = b""
    form: dict = field(default_factory=dict)  # application/x-www-form-urlencoded body

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


class RequestParser:
    """Feed it what the socket gave; `feed` returns the Request once complete, else None."""

    def __init__(self, max_head: int = 8192, max_headers: int = 48, max_target: int = 2048,
                 max_body: int = 4096):
        self.max_head = max_head
        self.max_headers = max_headers
        self.max_target = max_target
        self.max_body = max_body
        self._buf = bytearray()
        self._head = None  # (method, target, headers) once the blank line arrived
        self._need = 0

    def feed(self, data: bytes) -> Request | None:
        self._buf += data
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self.max_head:
                    raise HttpError(431, f"request head over {self.max_head} bytes")
                self._check_request_line()
                return None
            if end + 4 > self.max_head:
                raise HttpError(431, f"request head over {self.max_head} bytes")
            self._head = self._parse_head(bytes(self._buf[:end]))
            del self._buf[:end + 4]
            self._need = self._body_length(self._head[2])
        if len(self._buf) < self._need:
            return None
        method, target, headers = self._head
        body = bytes(self._buf[:self._need])
        return _request(method, target, headers, body)

    def _check_request_line(self):
        """Refuse early what can never be a request (so a stranger cannot make us wait for
        8 KiB of garbage): a first line longer than allowed, or not starting with a token."""
        nl = self._buf.find(b"\n")
        first = self._buf if nl < 0 else self._buf[:nl]
        if len(first) > self.max_target + 32:
            raise HttpError(414, f"request line over {self.max_target} bytes")
        if first and chr(first[0]) not in _TOKEN:
            raise HttpError(400, "not an HTTP request")

    def _parse_head(self, head: bytes):
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # latin-1 decodes anything; kept for clarity
            raise HttpError(400, "undecodable request head") from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HttpError(505, f"unsupported version {version[:16]!r}")
        if len(target) > self.max_target:
            raise HttpError(414, f"request target over {self.max_target} bytes")
        if not target.startswith("/"):
            raise HttpError(400, "request target must be a path")
        headers = {}
        if len(lines) - 1 > self.max_headers:
            raise HttpError(431, f"more than {self.max_headers} header fields")
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or not set(name) <= _TOKEN:
                raise HttpError(400, "malformed header field")
            headers[name.lower()] = value.strip(" \t")
        if version == "HTTP/1.1" and "host" not in headers:
            raise HttpError(400, "HTTP/1.1 request without Host")
        return method, target, headers

    def _body_length(self, headers) -> int:
        if "transfer-encoding" in headers:
            raise HttpError(501, "chunked request bodies are not accepted")
        raw = headers.get("content-length", "0")
        if not raw.isdigit() or len(raw) > 12:
            raise HttpError(400, "bad Content-Length")
        n = int(raw)
        if n > self.max_body:
            raise HttpError(413, f"request body over {self.max_body} bytes")
        return n


def _request(method, target, headers, body) -> Request:
    path, _, qs = target.partition("?")
    path = unquote(path)
    query = dict(parse_qsl(qs, keep_blank_values=True))
    form = {}
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if body and ctype == "application/x-www-form-urlencoded":
        form = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    return Request(method, target, path, query, headers, body, form)


# Sent with every answer: nothing is cached, framed, sniffed, or loaded from elsewhere, and the
# page runs no script at all.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
     "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def response_bytes(status: int, body: bytes = b"", content_type: str = "text/plain; "
                   "charset=utf-8", extra_headers=(), head_only: bool = False) -> bytes:
    """A complete HTTP/1.1 response that ends the connection."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
             f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in SECURITY_HEADERS]
    lines += [f"{k}: {v}" for k, v in extra_headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
