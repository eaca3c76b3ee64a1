"""HTTP/1.x request reader, sans-IO, with nginx's limits and nginx's verdicts on bad input.

Why our own and not h11: the decoy must refuse exactly what nginx refuses, with the same status
(a request line over 8 KiB is 414, a header line over 8 KiB is 400 "Request Header Or Cookie Too
Large", a lower-case method is 400, HTTP/2.0 is 505, an unknown Transfer-Encoding is 501...), and
a generic parser's verdicts differ in ways a prober can see. Limits (nginx defaults):
large_client_header_buffers 4 x 8k, client_max_body_size 1m. Deadlines are the caller's.

Events: `Request`, `NEED_DATA`, or `HttpError(status, variant)` raised (the answer is then an
error page and a close). A request body (Content-Length or chunked) is dropped by the reader
itself before the next request, as nginx drops bodies sent to static files.
"""

import re
from dataclasses import dataclass

LINE_MAX = 8192  # large_client_header_buffers 4 8k
HEADERS_MAX = 4 * 8192
BODY_MAX = 1 << 20  # client_max_body_size 1m
NEED_DATA = object()
_METHOD = re.compile(rb"[A-Z_-]{1,32}")
_VERSION = re.compile(rb"HTTP/(\d{1,3})\.(\d{1,3})")
_TOKEN = re.compile(rb"[A-Za-z0-9-]+")
_HOST = re.compile(rb"[A-Za-z0-9.\-_~!$&'()*+,;=:%\[\]]*")


class HttpError(Exception):
    """A request nginx would refuse: `status` and, for two 400 pages, a `variant`."""

    def __init__(self, status: int, variant: str = "", *, linger: bool = False):
        super().__init__(f"{status} {variant}".strip())
        self.status = status
        self.variant = variant  # "" | "header_too_large" | "plain_http"
        self.linger = linger  # nginx reads (and drops) what the client still sends before closing


@dataclass
class Request:
    method: str
    target: bytes  # as sent (origin-form path, possibly with a query)
    version: tuple[int, int]  # (0, 9) for a simple request "GET /"
    headers: dict[bytes, bytes]  # lower-case names; the last of repeated headers
    keep_alive: bool
    chunked: bool = False

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)


class ChunkedSkipper:
    """Drops a chunked request body as it arrives (nginx discards bodies sent to static files
    and keeps the connection); HttpError(400) on a malformed body, 413 over BODY_MAX."""

    def __init__(self):
        self.done = False
        self._state = "size"  # size | data | data_crlf | trailer
        self._left = 0
        self._total = 0

    def feed(self, buf: bytearray) -> None:
        """Consume what it can from the front of `buf`."""
        while buf and not self.done:
            if self._state == "data":
                n = min(self._left, len(buf))
                del buf[:n]
                self._left -= n
                if not self._left:
                    self._state = "data_crlf"
                continue
            if self._state == "data_crlf" and not (b"\r\n".startswith(bytes(buf[:2]))
                                                   or buf[:1] == b"\n"):
                raise HttpError(400)  # a chunk longer than its size: refused at once
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > 4096:
                    raise HttpError(400)
                return
            line = bytes(buf[:nl]).rstrip(b"\r")
            del buf[:nl + 1]
            if self._state == "data_crlf":
                if line:
                    raise HttpError(400)
                self._state = "size"
            elif self._state == "size":
                size = line.split(b";", 1)[0].strip()
                if not size or len(size) > 16 or not all(c in b"0123456789abcdefABCDEF"
                                                         for c in size):
                    raise HttpError(400)
                self._left = int(size, 16)
                self._total += self._left
                if self._total > BODY_MAX:
                    raise HttpError(413, linger=True)
                self._state = "data" if self._left else "trailer"
            elif not line:  # the empty line after the trailers
                self.done = True


class RequestReader:
    """Feed bytes with `receive_data`; take requests with `next_event`."""

    def __init__(self):
        self._buf = bytearray()
        self._skip = 0  # body bytes of the previous request still to drop
        self._chunks: ChunkedSkipper | None = None  # its chunked body, being dropped

    def receive_data(self, data: bytes) -> None:
        if self._skip:
            drop = min(self._skip, len(data))
            self._skip -= drop
            data = data[drop:]
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Bytes received after the last request (what follows an upgrade request)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def next_event(self):
        buf = self._buf
        if self._chunks is not None:
            self._chunks.feed(buf)
            if not self._chunks.done:
                return NEED_DATA
            self._chunks = None
        while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # nginx skips empty lines first
            del buf[:2 if buf[:1] == b"\r" else 1]
        end = buf.find(b"\n")
        if end < 0:
            _check_line_prefix(bytes(buf[:64]))
            if len(buf) >= LINE_MAX:
                raise HttpError(414)
            return NEED_DATA
        if end >= LINE_MAX:
            raise HttpError(414)
        head_end = buf.find(b"\r\n\r\n")
        lf_end = buf.find(b"\n\n")
        ends = [x + 4 for x in (head_end,) if x >= 0] + [x + 2 for x in (lf_end,) if x >= 0]
        request_line = bytes(buf[:end]).rstrip(b"\r")
        method, target, version = _parse_request_line(request_line)
        if version == (0, 9):
            del buf[:end + 1]
            return Request(method, target, version, {}, keep_alive=False)
        if not ends:
            _check_partial_headers(buf, end + 1)
            return NEED_DATA
        stop = min(ends)
        raw = bytes(buf[end + 1:stop])
        if stop > HEADERS_MAX:
            raise HttpError(400, "header_too_large")
        del buf[:stop]
        headers = _parse_headers(raw)
        return _finish(self, method, target, version, headers)


def _check_line_prefix(head: bytes) -> None:
    """nginx rejects a request line at its first impossible byte, not at the end of the line:
    a method byte outside A-Z _ -, or a URI that starts with neither / nor a scheme."""
    method, space, rest = head.partition(b" ")
    if method and not _METHOD.fullmatch(method[:32]):
        raise HttpError(400)
    rest = rest.lstrip(b" ")
    if space and rest and not (rest[:1] == b"/" or rest[:1].isalpha()):
        raise HttpError(400)


def _origin_form(target: bytes) -> bytes:
    """The path of an absolute-form target (http://host/path), which nginx accepts."""
    m = re.fullmatch(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?]+(.*)", target)
    if m is None:
        raise HttpError(400)
    return m.group(1) or b"/"


def _parse_request_line(line: bytes) -> tuple[str, bytes, tuple[int, int]]:
    _check_line_prefix(line)
    parts = line.split(b" ")
    parts = [p for p in parts if p]
    if len(parts) == 2 and parts[0] == b"GET" and parts[1].startswith(b"/"):
        return "GET", parts[1], (0, 9)
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]):
        raise HttpError(400)
    target = parts[1]
    if not target.startswith(b"/"):
        target = _origin_form(target)
    if any(c < 0x21 or c == 0x7F for c in target):
        raise HttpError(400)
    m = _VERSION.fullmatch(parts[2])
    if m is None:
        raise HttpError(400)
    version = (int(m.group(1)), int(m.group(2)))
    if version[0] > 1:
        raise HttpError(505)
    if version[0] < 1:
        raise HttpError(400)
    return parts[0].decode("ascii"), target, version


def _check_partial_headers(buf: bytearray, start: int) -> None:
    """Refuse an over-long header line or header block before it is complete."""
    pos = start
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            if len(buf) - pos >= LINE_MAX:
                raise HttpError(400, "header_too_large")
            break
        if nl - pos >= LINE_MAX:
            raise HttpError(400, "header_too_large")
        pos = nl + 1
    if len(buf) > HEADERS_MAX:
        raise HttpError(400, "header_too_large")


def _parse_headers(raw: bytes) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for line in raw.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        if len(line) >= LINE_MAX:
            raise HttpError(400, "header_too_large")
        name, colon, value = line.partition(b":")
        if not colon or not name or name[:1] in b" \t":
            raise HttpError(400)
        if not _TOKEN.fullmatch(name):
            continue  # nginx: ignore_invalid_headers on (underscores too)
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"host" and b"host" in headers:
            raise HttpError(400)
        headers[name] = value
    return headers


def _finish(reader: RequestReader, method: str, target: bytes, version: tuple[int, int],
            headers: dict[bytes, bytes]) -> Request:
    host = headers.get(b"host")
    if version >= (1, 1) and host is None:
        raise HttpError(400)
    if host is not None and (not _HOST.fullmatch(host) or b".." in host or host[:1] == b"."):
        raise HttpError(400)
    conn = (headers.get(b"connection") or b"").lower()
    if version >= (1, 1):
        keep_alive = b"close" not in conn
    else:
        keep_alive = b"keep-alive" in conn
    te = headers.get(b"transfer-encoding")
    chunked = False
    if te is not None:
        if te.lower() != b"chunked":
            raise HttpError(501)
        if b"content-length" in headers or version < (1, 1):
            raise HttpError(400)
        chunked = True
        reader._chunks = ChunkedSkipper()
        reader._chunks.feed(reader._buf)  # a bad body already here is refused before answering
    cl = headers.get(b"content-length")
    if cl is not None:
        if not cl.isdigit() or len(cl) > 18:
            raise HttpError(400)
        n = int(cl)
        if n > BODY_MAX:
            raise HttpError(413, linger=True)
        drop = min(n, len(reader._buf))
        del reader._buf[:drop]
        reader._skip = n - drop
    return Request(method, target, version, headers, keep_alive, chunked)
