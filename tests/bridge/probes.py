"""The active probes a censor without the bridge secret can play, as data, and how to play them.

Each probe is answered by a stock nginx and by the bridge; the tests assert the answers are the
same bytes (Date normalised). `python -m tests.bridge.probes` prints the table for a report.
"""

import os
import socket
import ssl

from firmware.proto.frames import encode_frame
from tests.bridge.stock import normalize, read_answer, tls_client_context

H = b"Host: raspberrypi\r\n"
FOLLOW_UP = b"GET /robots.txt HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
INFO_FRAME = encode_frame({"v": 1, "id": 1, "op": "info", "args": {}})
WRONG_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key: a well-formed, wrong one
KEEPALIVE_IDLE = b"GET / HTTP/1.1\r\n" + H + b"X-Then: idle\r\n\r\n"


def upgrade(key: bytes, path: bytes = b"/") -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n")


# (name, bytes sent inside TLS). After a keep-alive answer the probe sends FOLLOW_UP on the same
# connection, so keep-alive handling is compared too.
TLS_PROBES = [
    ("GET /", b"GET / HTTP/1.1\r\n" + H + b"\r\n"),
    ("GET random path", b"GET /wp-login.php?x=1 HTTP/1.1\r\n" + H + b"\r\n"),
    ("GET /index.nginx-debian.html", b"GET /index.nginx-debian.html HTTP/1.1\r\n" + H + b"\r\n"),
    ("GET /index.html (absent)", b"GET /index.html HTTP/1.1\r\n" + H + b"\r\n"),
    ("HEAD /", b"HEAD / HTTP/1.1\r\n" + H + b"\r\n"),
    ("HEAD random path", b"HEAD /admin HTTP/1.1\r\n" + H + b"\r\n"),
    ("HTTP/1.0 GET /", b"GET / HTTP/1.0\r\n\r\n"),
    ("HTTP/1.0 keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    ("HTTP/0.9 GET /", b"GET /\r\n"),
    ("Connection: close", b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"),
    ("browser-like gzip", b"GET / HTTP/1.1\r\n" + H + b"User-Agent: Mozilla/5.0\r\nAccept: "
     b"text/html\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en\r\n\r\n"),
    ("HEAD with gzip", b"HEAD / HTTP/1.1\r\n" + H + b"Accept-Encoding: gzip\r\n\r\n"),
    ("Range 0-9", b"GET / HTTP/1.1\r\n" + H + b"Range: bytes=0-9\r\n\r\n"),
    ("Range suffix", b"GET / HTTP/1.1\r\n" + H + b"Range: bytes=-20\r\n\r\n"),
    ("Range unsatisfiable", b"GET / HTTP/1.1\r\n" + H + b"Range: bytes=9000-\r\n\r\n"),
    ("If-Modified-Since", b"GET / HTTP/1.1\r\n" + H +
     b"If-Modified-Since: Thu, 01 Jan 2026 12:00:00 GMT\r\n\r\n"),
    ("If-None-Match", b"GET / HTTP/1.1\r\n" + H + b'If-None-Match: "695661c0-267"\r\n\r\n'),
    ("POST / with body", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"),
    ("POST random path", b"POST /api HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\n{}"),
    ("GET / with a chunked body", b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("POST random path, chunked", b"POST /api HTTP/1.1\r\n" + H + b"Transfer-Encoding: "
     b"chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
    ("malformed chunked body", b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"\r\nzz\r\n"),
    ("PUT /", b"PUT / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n"),
    ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n"),
    ("no Host (1.1)", b"GET / HTTP/1.1\r\n\r\n"),
    ("HTTP/2.0 request line", b"GET / HTTP/2.0\r\n" + H + b"\r\n"),
    ("lower-case method", b"get / HTTP/1.1\r\n" + H + b"\r\n"),
    ("path traversal", b"GET /../../etc/passwd HTTP/1.1\r\n" + H + b"\r\n"),
    ("encoded path", b"GET /%69ndex.nginx-debian.html HTTP/1.1\r\n" + H + b"\r\n"),
    ("URI over 8 KiB", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    ("header over 8 KiB", b"GET / HTTP/1.1\r\n" + H + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n"),
    ("Transfer-Encoding gzip", b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n"),
    ("Content-Length 2 MB", b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 2000000\r\n\r\n"),
    ("MSIE user agent 404", b"GET /nope HTTP/1.1\r\n" + H +
     b"User-Agent: Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)\r\n\r\n"),
    ("two pipelined requests", b"GET / HTTP/1.1\r\n" + H + b"\r\nHEAD /x HTTP/1.1\r\n" + H
     + b"\r\n"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("homenode info frame", INFO_FRAME),
    ("absolute-form URI", b"GET http://raspberrypi/ HTTP/1.1\r\n" + H + b"\r\n"),
    ("random bytes", bytes.fromhex("8f3a61c2e01d9b7744aa09e1c3b5d2f0") * 4),
    ("WebSocket upgrade, no key", upgrade(b"")[:-2].replace(b"Sec-WebSocket-Key: \r\n", b"")
     + b"\r\n"),
    ("WebSocket upgrade, wrong key", upgrade(WRONG_KEY)),
    ("WebSocket upgrade, wrong key, /ws", upgrade(WRONG_KEY, b"/ws")),
    ("WebSocket upgrade, secret as key", upgrade(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
    # deadlines (both servers' timeouts are shortened alike in the harness): how the
    # connection ends says whether the server sent close_notify
    ("TLS, then silence", b""),
    ("a request, then an idle keep-alive", KEEPALIVE_IDLE),
    ("half a request, then silence", b"GET / HTTP/1.1\r\nHost: x\r\n"),
]


def play_tls(port: int, data: bytes, *, alpn=None) -> bytes:
    """Send `data` inside TLS; the server's answer (and to FOLLOW_UP while it keeps the
    connection open), normalised."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            s = tls_client_context(alpn).wrap_socket(raw, suppress_ragged_eofs=False)
        except (ssl.SSLError, OSError) as e:
            return f"<handshake: {type(e).__name__}: {getattr(e, 'reason', e)}>".encode()
        head = data.startswith(b"HEAD")
        s.sendall(data)
        if not data.endswith(b"\n\n") and not data.endswith(b"\r\n\r\n"):
            return normalize(_until_closed(s))  # not a whole request: how does it end?
        out = read_answer(s, head_request=head)
        if data.startswith(b"GET / HTTP/1.1\r\n" + H + b"\r\nHEAD"):  # the pipelined pair
            out += b"\n--\n" + read_answer(s, head_request=True)
        if not out.endswith((b"<EOF>", b"<TIMEOUT>", b">")) and out.startswith(b"HTTP/"):
            if data == KEEPALIVE_IDLE:
                return normalize(out + b"\n-- idle --\n" + _until_closed(s))
            s.sendall(FOLLOW_UP)
            out += b"\n-- follow-up --\n" + read_answer(s)
        return normalize(out)


def _until_closed(s, wait: float = 6.0) -> bytes:
    out = b""
    s.settimeout(wait)
    try:
        while d := s.recv(65536):
            out += d
        return out + b"<EOF: close_notify>"
    except TimeoutError:
        return out + b"<TIMEOUT>"
    except (ssl.SSLError, OSError) as e:
        return out + f"<{type(e).__name__}>".encode()


def play_plain(port: int, data: bytes, *, wait: float = 6.0) -> bytes:
    """Send `data` on the TCP connection without TLS; every byte back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.settimeout(wait)
        out = b""
        try:
            while d := s.recv(65536):
                out += d
            out += b"<EOF>"
        except TimeoutError:
            out += b"<TIMEOUT>"
        except OSError as e:
            out += f"<{type(e).__name__}>".encode()
        return normalize(out)


PLAIN_PROBES = [
    ("plain HTTP GET / on the TLS port", b"GET / HTTP/1.1\r\n" + H + b"\r\n"),
    ("plain HTTP HEAD", b"HEAD / HTTP/1.1\r\n" + H + b"\r\n"),
    ("garbage before TLS", b"\x00\x01\x02garbage\r\n\r\n"),
    ("homenode info frame without TLS", INFO_FRAME + b"\r\n\r\n"),
    ("TLS record header, then junk", b"\x16\x03\x01\x00\x05hello"),
    ("TLS handshake record with a bad body",
     b"\x16\x03\x01\x00\x30" + bytes.fromhex("01000030") + os.urandom(44)),
    ("SSLv2-style first byte", b"\x80\x2e\x01\x00\x02" + bytes(41)),
]


if __name__ == "__main__":  # pragma: no cover - prints the probe table for a report
    import sys
    import tempfile

    from tests.bridge.stock import BridgeInThread, StockNginx, make_snakeoil

    d = tempfile.mkdtemp()
    key, cert = make_snakeoil(d)
    ng, br = StockNginx(d, key, cert), BridgeInThread(key, cert, os.urandom(32))
    try:
        for name, data in TLS_PROBES + PLAIN_PROBES:
            play = play_tls if (name, data) in TLS_PROBES else play_plain
            a, b = play(ng.port, data), play(br.port, data)
            first = a.split(b"\r\n", 1)[0][:50].decode("latin-1")
            tail = "kept open" if b"-- follow-up --" in a else (
                "closed" if a.endswith(b"<EOF>") else "no answer, open")
            print(f"| {name} | {first or a[:30]!r} ({tail}) | {'same' if a == b else 'DIFFERS'} |")
            if a != b and "-v" in sys.argv:
                print(a, "\n", b)
    finally:
        ng.stop()
        br.stop()
