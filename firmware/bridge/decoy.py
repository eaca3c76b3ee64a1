"""The decoy: what a stock Debian nginx with its default site answers, as a pure function.

"Stock" here is Debian's nginx package with its default site and the HTTPS lines the site file
ships commented out (`listen 443 ssl default_server; include snippets/snakeoil.conf;`), plus
`server_tokens off` (so `Server: nginx` and no version to go stale; `server_token` changes it).
That is one of the most common things on port 443 of a home address, and every byte here is
checked against a real nginx in tests/bridge/test_vs_nginx.py: status lines, header order,
error pages, ETag/Last-Modified, Range, conditional requests, gzip (level 1, nginx's window
shrink, one chunk), HEAD, HTTP/1.0 and 0.9, keep-alive.

The site's only page is nginx's own welcome page (`index.nginx-debian.html`), served for `/`, as
on millions of real hosts: a page of our own would be a body hash a censor could search for.
"""

import email.utils
import functools
import zlib
from dataclasses import dataclass

from firmware.bridge.http1 import HttpError, Request

WELCOME_PAGE = (
    b"<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n<style>\n"
    b"html { color-scheme: light dark; }\nbody { width: 35em; margin: 0 auto;\n"
    b"font-family: Tahoma, Verdana, Arial, sans-serif; }\n</style>\n</head>\n<body>\n"
    b"<h1>Welcome to nginx!</h1>\n<p>If you see this page, the nginx web server is successfully "
    b"installed and\nworking. Further configuration is required.</p>\n\n<p>For online "
    b"documentation and support please refer to\n<a href=\"http://nginx.org/\">nginx.org</a>."
    b"<br/>\nCommercial support is available at\n<a href=\"http://nginx.com/\">nginx.com</a>."
    b"</p>\n\n<p><em>Thank you for using nginx.</em></p>\n</body>\n</html>\n"
)
INDEX_NAMES = ("index.html", "index.htm", "index.nginx-debian.html")
KEEPALIVE_REQUESTS = 1000
REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
           404: "Not Found", 405: "Not Allowed", 413: "Request Entity Too Large",
           414: "Request-URI Too Large", 416: "Requested Range Not Satisfiable",
           501: "Not Implemented", 505: "HTTP Version Not Supported"}
_VARIANT_LINES = {"plain_http": "The plain HTTP request was sent to HTTPS port",
                  "header_too_large": "Request Header Or Cookie Too Large"}
_MIME = {"html": "text/html", "htm": "text/html", "css": "text/css", "txt": "text/plain",
         "js": "application/javascript", "png": "image/png", "ico": "image/x-icon"}
MSIE_PADDING = b"<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n" * 6


@dataclass(frozen=True)
class SiteFile:
    body: bytes
    mtime: int  # seconds since the epoch (Last-Modified and the ETag)


@dataclass
class Answer:
    data: bytes  # status line, headers and body, as written
    close: bool  # close the connection after writing
    linger: bool = False  # before closing, read and drop what the client still sends


def http_date(t: float) -> str:
    return _http_date(int(t))


@functools.lru_cache(maxsize=64)
def _http_date(seconds: int) -> str:  # one formatting per second, not two per answer
    return email.utils.formatdate(seconds, usegmt=True)


class DecoySite:
    """A static site answered the way nginx answers it. `files` maps names in the document root
    (flat: no directories) to SiteFile."""

    def __init__(self, files: dict[str, SiteFile], *, server_token: str = "nginx"):
        self.files = dict(files)
        self.server_token = server_token

    @classmethod
    def stock(cls, mtime: int, **kw) -> "DecoySite":
        """The Debian default site; `mtime` should be the bridge's install time."""
        return cls({"index.nginx-debian.html": SiteFile(WELCOME_PAGE, mtime)}, **kw)

    # -- answers ---------------------------------------------------------------------------

    def answer(self, req: Request, now: float, served: int = 1) -> Answer:
        """The answer to one parsed request; `served` counts requests on this connection."""
        keep = req.keep_alive and served < KEEPALIVE_REQUESTS
        try:
            path = normalize_path(req.target)
        except HttpError as e:
            return self.error(e.status, now, close=True, req=req)
        name = self._lookup(path)
        if name is None:
            return self.error(404, now, close=not keep, req=req)
        if req.method not in ("GET", "HEAD"):
            return self.error(405, now, close=not keep, req=req)
        return self._file(req, self.files[name], name, now, keep)

    def error(self, status: int, now: float, *, close: bool, variant: str = "",
              req: Request | None = None, linger: bool = False, extra: str = "") -> Answer:
        """nginx's built-in error page for `status` (`variant`: one of the two special 400s)."""
        body = self._error_body(status, variant)
        if req is not None and b"MSIE" in (req.header(b"user-agent") or b""):
            body += MSIE_PADDING
        head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nServer: {self.server_token}\r\n"
                f"Date: {http_date(now)}\r\nContent-Type: text/html\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n{extra}\r\n").encode()
        if req is not None and req.version == (0, 9):
            return Answer(body, True)
        if req is not None and req.method == "HEAD":
            body = b""
        return Answer(head + body, close, linger)

    def from_error(self, e: HttpError, now: float) -> Answer:
        return self.error(e.status, now, close=True, variant=e.variant, linger=e.linger)

    def _error_body(self, status: int, variant: str) -> bytes:
        title = f"{status} {REASONS[status]}"
        line = _VARIANT_LINES.get(variant)
        head_title = f"400 {line}" if line else title
        extra = f"<center>{line}</center>\r\n" if line else ""
        return (f"<html>\r\n<head><title>{head_title}</title></head>\r\n<body>\r\n"
                f"<center><h1>{title}</h1></center>\r\n{extra}"
                f"<hr><center>{self.server_token}</center>\r\n</body>\r\n</html>\r\n").encode()

    def _lookup(self, path: str) -> str | None:
        if path == "/":
            return next((n for n in INDEX_NAMES if n in self.files), None)
        name = path[1:]
        return name if name in self.files else None

    def _file(self, req: Request, f: SiteFile, name: str, now: float, keep: bool) -> Answer:
        if req.version == (0, 9):
            return Answer(f.body, True)
        ctype = _MIME.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")
        etag = f'"{f.mtime:x}-{len(f.body):x}"'
        lm = http_date(f.mtime)
        conn = f"Connection: {'keep-alive' if keep else 'close'}\r\n"
        common = f"Server: {self.server_token}\r\nDate: {http_date(now)}\r\n"
        if _not_modified(req, etag, lm):
            head = f"HTTP/1.1 304 Not Modified\r\n{common}Last-Modified: {lm}\r\n{conn}ETag: {etag}\r\n\r\n"
            return Answer(head.encode(), not keep)
        if ctype == "text/html" and len(f.body) >= 20 and _accepts_gzip(req):
            head = (f"HTTP/1.1 200 OK\r\n{common}Content-Type: {ctype}\r\nLast-Modified: {lm}\r\n"
                    + ("" if req.method == "HEAD" else "Transfer-Encoding: chunked\r\n")
                    + f"{conn}ETag: W/{etag}\r\nContent-Encoding: gzip\r\n\r\n").encode()
            if req.method == "HEAD":
                return Answer(head, not keep)
            gz = nginx_gzip(f.body)
            return Answer(head + b"%x\r\n" % len(gz) + gz + b"\r\n0\r\n\r\n", not keep)
        status, body, crange = 200, f.body, ""
        rng = _range(req.header(b"range"), len(f.body))
        if rng == "unsatisfiable":
            return self.error(416, now, close=not keep, req=req,
                              extra=f"Content-Range: bytes */{len(f.body)}\r\n")
        if rng is not None:
            start, end = rng
            status, body = 206, f.body[start:end + 1]
            crange = f"Content-Range: bytes {start}-{end}/{len(f.body)}\r\n"
        head = (f"HTTP/1.1 {status} {REASONS[status]}\r\n{common}Content-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nLast-Modified: {lm}\r\n{conn}ETag: {etag}\r\n"
                + (crange or "Accept-Ranges: bytes\r\n") + "\r\n").encode()
        return Answer(head + (b"" if req.method == "HEAD" else body), not keep)


def normalize_path(target: bytes) -> str:
    """nginx's URI normalisation: drop the query, decode %XX, merge slashes, resolve . and ..;
    climbing above the root is HttpError(400)."""
    path = target.split(b"?", 1)[0]
    out = bytearray()
    i = 0
    while i < len(path):
        c = path[i]
        if c == 0x25:  # %
            try:
                out.append(int(path[i + 1:i + 3], 16))
            except ValueError:
                raise HttpError(400) from None
            if len(path[i + 1:i + 3]) != 2:
                raise HttpError(400)
            i += 3
            continue
        out.append(c)
        i += 1
    parts: list[bytes] = []
    for seg in bytes(out).split(b"/")[1:]:
        if seg in (b"", b"."):
            continue
        if seg == b"..":
            if not parts:
                raise HttpError(400)
            parts.pop()
            continue
        parts.append(seg)
    text = "/" + "/".join(p.decode("latin-1") for p in parts)
    if out.endswith(b"/") and parts:
        text += "/"
    return text


def _accepts_gzip(req: Request) -> bool:
    if req.version < (1, 1):
        return False  # gzip_http_version 1.1
    ae = (req.header(b"accept-encoding") or b"").lower()
    for item in ae.split(b","):
        name, _, params = item.strip().partition(b";")
        if name.strip() == b"gzip":
            q = params.replace(b" ", b"")
            return not (q.startswith(b"q=0") and q.strip(b"q=0.") == b"")
    return False


def _not_modified(req: Request, etag: str, lm: str) -> bool:
    inm = req.header(b"if-none-match")
    if inm is not None:
        tags = [t.strip() for t in inm.decode("latin-1").split(",")]
        return "*" in tags or etag in tags or f"W/{etag}" in tags
    ims = req.header(b"if-modified-since")
    return ims is not None and ims.decode("latin-1") == lm


def _range(value: bytes | None, size: int):
    """(start, end) of a single satisfiable byte range, "unsatisfiable", or None (ignore)."""
    if value is None or not value.startswith(b"bytes="):
        return None
    spec = value[6:].strip()
    if b"," in spec:
        return None  # several ranges: answered whole (nginx would send multipart)
    first, dash, last = spec.partition(b"-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        n = int(last)
        return "unsatisfiable" if n == 0 else (max(0, size - n), size - 1)
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = min(int(last), size - 1) if last else size - 1
    return None if end < start else (start, end)


def nginx_gzip(data: bytes) -> bytes:
    """gzip as nginx's gzip filter makes it for a body of known length (level 1, window and
    memLevel shrunk to the length, its fixed 10-byte header)."""
    wbits, memlevel = 15, 8
    while len(data) < (1 << (wbits - 1)) - 262:
        wbits -= 1
        memlevel -= 1
    wbits, memlevel = max(wbits, 9), max(memlevel, 1)
    c = zlib.compressobj(1, zlib.DEFLATED, -wbits, memlevel)
    deflated = c.compress(data) + c.flush()
    return (bytes.fromhex("1f8b0800000000000403") + deflated
            + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little"))
