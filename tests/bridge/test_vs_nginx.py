"""The bridge, seen by anyone without its secret, must be indistinguishable from a stock nginx.

A real Debian nginx (tests/bridge/stock.py) and a real BridgeServer run side by side with the
same certificate and document root; every probe is played against both and the answers must be
the same bytes (only the Date header's value is normalised):
  - TLS as `openssl s_client -msg -tlsextdebug` sees it, for a set of client offers: every
    handshake message received with its length, every extension, version, cipher, key exchange
    group, signature type, ALPN, session-ticket count/length/lifetime hint, alerts;
  - HTTP probes inside TLS (tests/bridge/probes.py) and raw probes without TLS;
  - curl, the way a person would probe;
  - a WebSocket upgrade replaying an authenticator recorded from a real authenticated session.
And the bridge's own certificate has the same shape as one made by Debian's make-ssl-cert.
"""

import os
import re
import socket
import ssl
import subprocess

import pytest

from firmware.bridge import auth, webcert
from firmware.bridge.websocket import accept_value
from tests.bridge import probes
from tests.bridge.stock import (
    SITE_MTIME,
    BridgeInThread,
    BridgeOfANode,
    StockNginx,
    make_snakeoil,
    normalize,
    read_answer,
    require_tools,
    tls_client_context,
)

pytestmark = pytest.mark.slow  # ~45 s per bridge kind: two real servers, lingering closes

S_CLIENT_CASES = {
    "default (TLS 1.3)": [],
    "TLS 1.2 only": ["-tls1_2"],
    "TLS 1.1 only": ["-tls1_1"],
    "TLS 1.0 only": ["-tls1"],
    "TLS 1.2, RSA key exchange only": ["-tls1_2", "-cipher", "AES128-SHA"],
    "TLS 1.2, DHE only": ["-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384"],
    "TLS 1.2, three ECDHE suites": ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384"],
    "TLS 1.3, AES-128 and ChaCha20": ["-ciphersuites",
                                      "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"],
    "ALPN h2,http/1.1": ["-alpn", "h2,http/1.1"],
    "ALPN h2 only": ["-alpn", "h2"],
    "SNI example.com": ["-servername", "example.com"],
    "TLS 1.2 with SNI": ["-tls1_2", "-servername", "raspberrypi"],
    "group P-256 only": ["-groups", "P-256"],
    "group ffdhe2048 only": ["-groups", "ffdhe2048"],
    "TLS 1.2 without tickets": ["-no_ticket", "-tls1_2"],
}
# what each case must show at nginx, so two identical failures cannot pass as a match
S_CLIENT_EXPECT = {
    "default (TLS 1.3)": "Cipher is TLS_AES_256_GCM_SHA384",
    "TLS 1.2 only": "Cipher is ECDHE-RSA-AES256-GCM-SHA384",
    "TLS 1.1 only": "alert internal error",
    "TLS 1.0 only": "alert internal error",
    "TLS 1.2, RSA key exchange only": "Cipher is AES128-SHA",
    "TLS 1.2, DHE only": "alert handshake failure",
    "TLS 1.2, three ECDHE suites": "Cipher is ECDHE-RSA-AES256-GCM-SHA384",
    "TLS 1.3, AES-128 and ChaCha20": "Cipher is TLS_CHACHA20_POLY1305_SHA256",
    "ALPN h2,http/1.1": "ALPN protocol: http/1.1",
    "ALPN h2 only": "no application protocol",
    "SNI example.com": 'TLS server extension "server name"',
    "TLS 1.2 with SNI": "lifetime hint: 300",
    "group P-256 only": "Server Temp Key: ECDH, prime256v1",
    "group ffdhe2048 only": "Server Temp Key: DH, 2048 bits",
    "TLS 1.2 without tickets": "Cipher is ECDHE-RSA-AES256-GCM-SHA384",
}
_VOLATILE = re.compile(r"^\s*[0-9a-f]{4} - |^\s+[0-9a-f]{2}( [0-9a-f]{2})*\s*$|^>>>|read R BLOCK|Session-ID:|Master-Key|"
                       r"Start Time|Resumption PSK|^Date: |^[A-Za-z0-9+/=]{64}$")


@pytest.fixture(scope="module", params=["server", "node"])
def servers(request, tmp_path_factory):
    """nginx and the bridge, with one certificate: the standalone BridgeServer on a snakeoil
    certificate, or the bridge a real node started (`homenode run` with [bridge] enabled) on
    the certificate it made itself."""
    require_tools()
    d = str(tmp_path_factory.mktemp("stock"))
    if request.param == "server":
        key, cert = make_snakeoil(d)
        bridge, mtime = BridgeInThread(key, cert, os.urandom(32)), SITE_MTIME
    else:
        bridge = BridgeOfANode(tmp_path_factory.mktemp("node"))
        key, cert, mtime = bridge.key, bridge.cert, bridge.site_mtime
    nginx = StockNginx(d, key, cert, site_mtime=mtime)
    yield nginx, bridge, cert
    nginx.stop()
    bridge.stop()


def s_client(port: int, args: list[str],
             send: bytes = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") -> str:
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-msg",
                        "-tlsextdebug", "-ign_eof", *args],
                       input=send, capture_output=True, timeout=30)
    text = (p.stdout + p.stderr).decode("latin-1")
    text = re.sub(r"[0-9A-F]{16,}:error:", "<pid>:error:", text)
    return "\n".join(x for x in text.splitlines() if not _VOLATILE.search(x))


@pytest.mark.parametrize("case", list(S_CLIENT_CASES))
def test_tls_as_openssl_s_client_sees_it(servers, case):
    nginx, bridge, _ = servers
    seen_nginx = s_client(nginx.port, S_CLIENT_CASES[case])
    seen_bridge = s_client(bridge.port, S_CLIENT_CASES[case])
    assert S_CLIENT_EXPECT[case] in seen_nginx, seen_nginx
    assert seen_bridge == seen_nginx


def test_s_client_playing_a_homenode_info_frame(servers):
    """What the issue's prober does first: a node's `info` request, raw, inside TLS."""
    nginx, bridge, _ = servers
    seen = [s_client(port, [], send=probes.INFO_FRAME) for port in (nginx.port, bridge.port)]
    assert "HTTP/1.1 400 Bad Request" in seen[0]
    assert seen[1] == seen[0]


def test_session_resumption_like_nginx(servers, tmp_path):
    """A TLS 1.2 session ticket from one connection resumes the next one, at both."""
    nginx, bridge, _ = servers
    for port in (nginx.port, bridge.port):
        sess = str(tmp_path / f"{port}.sess")
        s_client(port, ["-tls1_2", "-sess_out", sess])
        again = s_client(port, ["-tls1_2", "-sess_in", sess])
        assert "Reused, TLSv1.2" in again


@pytest.mark.parametrize("name", [p[0] for p in probes.TLS_PROBES])
def test_probe_inside_tls_gets_nginx_answer(servers, name):
    nginx, bridge, _ = servers
    data = dict(probes.TLS_PROBES)[name]
    want = probes.play_tls(nginx.port, data)
    assert want.startswith((b"HTTP/1.1 ", b"<!DOCTYPE", b"<EOF: close_notify>",
                            b"<SSLEOFError>")), want[:200]
    links = bridge.link_count()
    got = probes.play_tls(bridge.port, data)
    assert got == want
    assert b"homenode" not in got.lower()
    assert bridge.link_count() == links


@pytest.mark.parametrize("name", [p[0] for p in probes.PLAIN_PROBES])
def test_probe_without_tls_gets_nginx_answer(servers, name):
    nginx, bridge, _ = servers
    data = dict(probes.PLAIN_PROBES)[name]
    want = probes.play_plain(nginx.port, data)
    assert probes.play_plain(bridge.port, data) == want


CURL_CASES = {
    "curl GET /": ["-i"],
    "curl HEAD": ["-I"],
    "curl compressed, HTTP/2 offered": ["-i", "--compressed", "--http2"],
    "curl 404": ["-i", "-o", "-", "/missing"],
    "curl WebSocket upgrade, wrong key": ["-i", "-H", "Upgrade: websocket", "-H",
                                          "Connection: Upgrade", "-H",
                                          f"Sec-WebSocket-Key: {probes.WRONG_KEY.decode()}",
                                          "-H", "Sec-WebSocket-Version: 13"],
}


@pytest.mark.parametrize("case", list(CURL_CASES))
def test_curl_sees_nginx(servers, case):
    nginx, bridge, _ = servers
    out = []
    for port in (nginx.port, bridge.port):
        args = list(CURL_CASES[case])
        path = "/"
        if "/missing" in args:
            args.remove("/missing")
            path = "/missing"
        p = subprocess.run(["curl", "-sk", "--max-time", "20", *args,
                            f"https://127.0.0.1:{port}{path}"], capture_output=True, timeout=30)
        out.append(normalize(p.stdout))
    assert out[0].startswith(b"HTTP/1.1 "), out[0][:200]
    assert out[1] == out[0]


def _authenticated_upgrade(port: int, secret: bytes, pin: bytes) -> tuple[bytes, bytes, int]:
    """A real client's upgrade request for one TLS session, the server's answer to it, and the
    client's port (its link's peer port)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        s = tls_client_context().wrap_socket(raw)
        key = auth.websocket_key(auth.auth_key(secret), s.get_channel_binding("tls-unique"), pin)
        request = probes.upgrade(key.encode())
        s.sendall(request)
        return request, read_answer(s), s.getsockname()[1]


def test_replayed_authenticator_gets_decoy_answer_and_no_link(servers):
    nginx, bridge, cert = servers
    with open(cert, "rb") as f:
        pin = auth.pin_of_cert(webcert.pem_to_der(f.read()))
    links = bridge.link_count()
    request, answer, _ = _authenticated_upgrade(bridge.port, bridge.secret, pin)
    key = re.search(rb"Sec-WebSocket-Key: (\S+)", request).group(1)
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")  # the recorded session
    assert f"Sec-WebSocket-Accept: {accept_value(key)}".encode() in answer
    replayed = probes.play_tls(bridge.port, request)
    assert replayed == probes.play_tls(nginx.port, request)
    assert replayed.startswith(b"HTTP/1.1 200 OK\r\n")
    # the answer above was the whole exchange on the replaying connection (it ended with the
    # follow-up's close), so a link it had opened would be listed by now
    assert bridge.link_count() == links + 1, "a replay opened a link"


def test_tls12_session_never_authenticates(servers):
    """tls-unique is used on TLS 1.3 only: a TLS 1.2 client holding the secret still gets the
    decoy (so no downgrade can weaken the binding)."""
    nginx, bridge, cert = servers
    with open(cert, "rb") as f:
        pin = auth.pin_of_cert(webcert.pem_to_der(f.read()))
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as raw:
        ctx = tls_client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        s = ctx.wrap_socket(raw)
        key = auth.websocket_key(auth.auth_key(bridge.secret),
                                 s.get_channel_binding("tls-unique"), pin)
        s.sendall(probes.upgrade(key.encode()) )
        assert read_answer(s).startswith(b"HTTP/1.1 200 OK\r\n")


def _shape(pem: bytes) -> dict:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    c = x509.load_pem_x509_certificate(pem)
    key = c.public_key()
    return {
        "version": c.version,
        "key": (type(key).__mro__[0].__name__ if not isinstance(key, rsa.RSAPublicKey)
                else "RSA", key.key_size, getattr(key.public_numbers(), "e", None)),
        "signature": c.signature_algorithm_oid.dotted_string,
        "issuer_is_subject": c.issuer == c.subject,
        "subject": [(a.oid.dotted_string, a._type) for a in c.subject],
        "validity_days": (c.not_valid_after_utc - c.not_valid_before_utc).days,
        "serial_bits_max": c.serial_number.bit_length() <= 159,
        "extensions": [(e.oid.dotted_string, e.critical) for e in c.extensions],
        "san": [type(n).__name__ for n in c.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value],
        "basic_constraints": c.extensions.get_extension_for_class(
            x509.BasicConstraints).value.ca,
        "ski_is_sha1_of_key": c.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest
        == x509.SubjectKeyIdentifier.from_public_key(key).digest,
        "der_skeleton": _skeleton(c.public_bytes(
            __import__("cryptography.hazmat.primitives.serialization",
                       fromlist=["Encoding"]).Encoding.DER)),
    }


def _skeleton(der: bytes, pos: int = 0, end: int | None = None, depth: int = 0) -> list:
    """Tag tree of a DER value (lengths of the fixed-size parts kept, variable leaves dropped)."""
    end = len(der) if end is None else end
    out = []
    while pos < end:
        tag, s, e = auth._tlv(der, pos, end)
        if tag & 0x20 and depth < 6:
            out.append((tag, _skeleton(der, s, e, depth + 1)))
        else:
            out.append((tag, e - s if tag not in (0x02, 0x03, 0x17, 0x0C, 0x04) else None))
        pos = e
    return out


def test_bridge_certificate_has_the_snakeoil_shape(servers, tmp_path):
    _, _, served_cert = servers  # the node's own certificate in the node case
    _, stock_cert = make_snakeoil(str(tmp_path))
    with open(stock_cert, "rb") as f:
        stock = f.read()
    with open(served_cert, "rb") as f:
        served = f.read()
    _, ours = webcert.web_certificate("raspberrypi")
    for cert in (ours, served):
        assert _shape(cert) == _shape(stock)
        assert b"homenode" not in webcert.pem_to_der(cert)
