"""Pure parts: HTTP/1 request reader limits, decoy answers, authenticator and pin."""

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.bridge import auth
from firmware.bridge.decoy import DecoySite, nginx_gzip, normalize_path
from firmware.bridge.http1 import NEED_DATA, HttpError, RequestReader


def reader_with(data: bytes) -> RequestReader:
    r = RequestReader()
    r.receive_data(data)
    return r


def test_request_fed_byte_by_byte():
    data = b"GET /a?b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nConnection: close\r\n\r\n"
    r = RequestReader()
    for i in range(len(data) - 1):
        r.receive_data(data[i:i + 1])
        assert r.next_event() is NEED_DATA
    r.receive_data(data[-1:])
    req = r.next_event()
    assert (req.method, req.target, req.version) == ("GET", b"/a?b", (1, 1))
    assert req.headers[b"x-a"] == b"1" and not req.keep_alive


def test_body_is_skipped_before_the_next_request():
    r = reader_with(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    assert r.next_event().method == "POST"
    r.receive_data(b"defghij" + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert r.next_event().target == b"/next"


@pytest.mark.parametrize("data, status", [
    (b"\x00\x00\x00\x0e", 400),  # a homenode frame: refused at its first byte
    (b"get ", 400),
    (b"GET *", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET /" + b"a" * 9000, 414),  # no line end needed to refuse it
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 9000, 400),
    (b"GET / HTTP/1.1\r\n" + b"X-A: aaaaaaaa\r\n" * 3000, 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n", 400),
])
def test_refusals_match_nginx_statuses(data, status):
    with pytest.raises(HttpError) as e:
        reader_with(data).next_event()
    assert e.value.status == status


@given(st.binary(max_size=3000))
def test_reader_never_crashes_or_buffers_past_limits(data):
    r = reader_with(data)
    try:
        while r.next_event() is not NEED_DATA:
            pass
    except HttpError:
        return
    assert r.buffered <= 4 * 8192


def test_normalize_path():
    assert normalize_path(b"/a//b/./c/../%64?x=..") == "/a/b/d"
    for bad in (b"/..", b"/a/../../b", b"/%zz", b"/%4"):
        with pytest.raises(HttpError):
            normalize_path(bad)


def test_gzip_is_valid_and_level_one():
    import gzip
    body = os.urandom(50) * 40
    assert gzip.decompress(nginx_gzip(body)) == body


def test_decoy_keepalive_limit_closes_the_thousandth():
    site = DecoySite.stock(1_700_000_000)
    req = reader_with(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").next_event()
    assert not site.answer(req, 0.0, served=999).close
    ans = site.answer(req, 0.0, served=1000)
    assert ans.close and b"Connection: close\r\n" in ans.data


def test_authenticator_bound_to_binding_secret_and_pin():
    key = auth.auth_key(os.urandom(32))
    b1, b2, pin = os.urandom(12), os.urandom(12), os.urandom(32)
    a = auth.authenticator(key, b1, pin)
    assert len(a) == 16
    assert a != auth.authenticator(key, b2, pin)
    assert a != auth.authenticator(auth.auth_key(os.urandom(32)), b1, pin)
    assert a != auth.authenticator(key, b1, os.urandom(32))
    header = auth.websocket_key(key, b1, pin).encode()
    assert len(base64.b64decode(header)) == 16 and len(header) == 24  # a normal WS key
    assert auth.check_websocket_key(a, header)
    assert not auth.check_websocket_key(a, auth.websocket_key(key, b2, pin).encode())
    assert not auth.check_websocket_key(a, None)
    assert not auth.check_websocket_key(None, header)
    assert not auth.check_websocket_key(None, b"\x00" * 24)  # the filler never matches
    with pytest.raises(ValueError):
        auth.authenticator(key, b"", pin)


def test_pin_is_sha256_of_spki(web_identity):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    from firmware.bridge.webcert import pem_to_der

    with open(web_identity[1], "rb") as f:
        pem = f.read()
    cert = x509.load_pem_x509_certificate(pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    h = hashes.Hash(hashes.SHA256())
    h.update(spki)
    assert auth.pin_of_cert(pem_to_der(pem)) == h.finalize()
    for bad in (b"", b"\x30\x03\x02\x01", pem_to_der(pem)[:100]):
        with pytest.raises(auth.PinError):
            auth.pin_of_cert(bad)


def test_chunked_body_dropped_across_reads_then_next_request():
    body = b"5;ext=1\r\nhello\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    r = reader_with(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert r.next_event().chunked
    for i in range(len(body)):
        r.receive_data(body[i:i + 1])
        assert r.next_event() is NEED_DATA
    r.receive_data(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    assert r.next_event().target == b"/after"


@pytest.mark.parametrize("body, status", [
    (b"zz\r\n", 400), (b"5\r\nhelloXX", 400), (b"100001\r\n", 413), (b"1" * 5000, 400)])
def test_bad_chunked_bodies(body, status):
    r = reader_with(b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    with pytest.raises(HttpError) as e:
        r.next_event()
        r.next_event()
    assert e.value.status == status
