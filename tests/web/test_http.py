"""The page's HTTP parser: bytes in, a request or the right refusal out (sans-IO)."""

import pytest

from firmware.web.http import HttpError, RequestParser, response_bytes


def parse(data: bytes, chunk: int | None = None, **limits):
    p = RequestParser(**limits)
    if chunk is None:
        return p.feed(data)
    req = None
    for i in range(0, len(data), chunk):
        req = p.feed(data[i:i + chunk])
        if req is not None:
            return req
    return req


def test_get_with_query_in_one_piece_and_byte_by_byte():
    raw = b"GET /status.json?x=1&y= HTTP/1.1\r\nHost: Box.local:8080\r\nX-A: b\r\n\r\n"
    for chunk in (None, 1, 7):
        req = parse(raw, chunk)
        assert (req.method, req.path, req.query) == ("GET", "/status.json", {"x": "1", "y": ""})
        assert req.header("host") == "Box.local:8080" and req.header("x-a") == "b"


def test_post_form_body_waits_for_content_length():
    p = RequestParser()
    head = (b"POST /identify HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-"
            b"urlencoded\r\nContent-Length: 12\r\n\r\n")
    assert p.feed(head + b"token=") is None
    req = p.feed(b"ab%2Bc")
    assert req.form == {"token": "ab+c"} and req.body == b"token=ab%2Bc"


@pytest.mark.parametrize("raw, status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                  # no Host
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),             # absolute form
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Name: x\r\nHost: h\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00", 400),                                   # a TLS hello
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),                        # h2 preface
])
def test_refusals(raw, status):
    with pytest.raises(HttpError) as e:
        parse(raw)
    assert e.value.status == status


def test_head_and_target_limits_are_enforced_before_buffering_more():
    p = RequestParser(max_head=1024, max_target=100)
    with pytest.raises(HttpError) as e:
        p.feed(b"GET /" + b"a" * 200)  # no line end yet: refused on length alone
    assert e.value.status == 414
    p = RequestParser(max_head=1024)
    p.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
    with pytest.raises(HttpError) as e:
        for _ in range(100):
            p.feed(b"X-Pad: " + b"y" * 50 + b"\r\n")
    assert e.value.status == 431
    many = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"A: b\r\n" * 60 + b"\r\n"
    with pytest.raises(HttpError) as e:
        parse(many, max_headers=48)
    assert e.value.status == 431


def test_response_is_complete_closes_and_carries_the_security_headers():
    r = response_bytes(200, b"hello", "text/plain", [("X-Y", "z")])
    head, _, body = r.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK" and body == b"hello"
    assert "Content-Length: 5" in lines and "Connection: close" in lines and "X-Y: z" in lines
    assert any(x.startswith("Content-Security-Policy: default-src 'none'") for x in lines)
    assert "X-Frame-Options: DENY" in lines
    assert response_bytes(200, b"hello", head_only=True).endswith(b"\r\n\r\n")
