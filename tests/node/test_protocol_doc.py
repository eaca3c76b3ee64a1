"""docs/protocol.md against a real node: the TLS and pinning section followed by an outside
client (stdlib ssl + cbor2, nothing from homenode's client), and the places where the doc and
the node used to disagree (nesting depth, `ttl: true`, `expire` beyond the longest ttl, the
frame-too-large message)."""

import datetime
import socket
import ssl
import time

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from firmware.identity import Identity, load_key_file
from firmware.proto.codec import decode_map
from firmware.proto.errors import FrameTooLarge, MalformedFrame
from firmware.proto.frames import encode_frame
from firmware.proto.hashing import sign_request
from firmware.proto.limits import DAY_MS, MAX_DEPTH, PROTOCOL_VERSION
from tests.conftest import NodeProcess

OWNER = Identity(bytes(range(1, 33)))


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = NodeProcess(tmp_path_factory.mktemp("protodoc"), {}).start()
    yield n
    n.kill()


# -- an outside client, written from the TLS section alone -----------------------------------


def doc_client_context(*, max_version=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if max_version else ssl.TLSVersion.TLSv1_3
    if max_version:
        ctx.maximum_version = max_version
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def spki_key(der: bytes) -> bytes:
    """The pin check of the doc, with an independent DER parser (cryptography)."""
    cert = x509.load_der_x509_certificate(der)
    key = cert.public_key()
    assert isinstance(key, Ed25519PublicKey)
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class RawLink:
    """Frames over a pinned TLS socket: u32 length + one CBOR map (the doc's Framing)."""

    def __init__(self, node, **ctx_kw):
        raw = socket.create_connection((node.host, node.port), timeout=10)
        self.tls = doc_client_context(**ctx_kw).wrap_socket(raw, server_hostname="any.example")
        assert spki_key(self.tls.getpeercert(binary_form=True)) == node.node_id  # pin first

    def ask(self, op, args, rid=1):
        body = cbor2.dumps({"v": PROTOCOL_VERSION, "id": rid, "op": op, "args": args})
        self.tls.sendall(len(body).to_bytes(4, "big") + body)
        return self.read()

    def send_raw(self, data: bytes):
        self.tls.sendall(data)
        return self.read()

    def read(self):
        head = self._exact(4)
        return cbor2.loads(self._exact(int.from_bytes(head, "big")))

    def _exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.tls.recv(n - len(out))
            assert chunk, "node closed the link"
            out += chunk
        return out

    def close(self):
        self.tls.close()


def test_tls_section_is_enough_to_write_a_client(node):
    link = RawLink(node, alpn=["h2", "homenode"])
    try:
        assert link.tls.version() == "TLSv1.3"
        assert link.tls.selected_alpn_protocol() is None  # offered, none negotiated
        der = link.tls.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        assert cert.version == x509.Version.v3 and cert.serial_number == 1
        assert cert.signature_algorithm_oid.dotted_string == "1.3.101.112"
        name = cert.subject.rfc4514_string()
        assert name == "CN=homenode" and cert.issuer == cert.subject
        assert cert.not_valid_before_utc == datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        assert cert.not_valid_after_utc == datetime.datetime(9999, 12, 31, 23, 59, 59,
                                                             tzinfo=datetime.UTC)
        assert len(cert.extensions) == 0
        cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes)  # self-signed
        # a pure function of the key: rebuilt from node.key, byte for byte
        ident = load_key_file(f"{node.data_dir}/node.key")
        rebuilt = x509.load_pem_x509_certificate(ident.tls_cert_pem()).public_bytes(Encoding.DER)
        assert rebuilt == der
        info = link.ask("info", {})
        assert info["id"] == 1 and info["ok"]["node_id"] == node.node_id
    finally:
        link.close()


def test_tls_1_2_is_refused(node):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        RawLink(node, max_version=ssl.TLSVersion.TLSv1_2)
    RawLink(node).close()  # and the node is still there for the next client


def test_no_sni_is_fine_too(node):
    raw = socket.create_connection((node.host, node.port), timeout=10)
    with doc_client_context().wrap_socket(raw) as tls:  # no server_hostname: no SNI at all
        assert spki_key(tls.getpeercert(binary_form=True)) == node.node_id


# -- nesting: at most 16 containers, empty ones included -------------------------------------


def nested(containers: int, innermost) -> bytes:
    """A request frame body with `containers` containers on its deepest path: the frame's map,
    the args map, then arrays down to `innermost` (an empty array is the last container)."""
    arrays = containers - 2
    inner = innermost
    for _ in range(arrays - (1 if innermost == [] else 0)):
        inner = [inner]
    return cbor2.dumps({"v": PROTOCOL_VERSION, "id": 7, "op": "info", "args": {"x": inner}})


@pytest.mark.parametrize("innermost", [0, []], ids=["int inside", "empty array inside"])
def test_nesting_limit_is_exactly_16_containers(innermost):
    assert MAX_DEPTH == 16
    decode_map(nested(16, innermost))
    with pytest.raises(MalformedFrame, match="depth"):
        decode_map(nested(17, innermost))


def test_nesting_limit_on_the_wire(node):
    link = RawLink(node)
    try:
        body = nested(16, [])
        r = link.send_raw(len(body).to_bytes(4, "big") + body)
        assert r["err"]["code"] == "bad_request" and r["id"] == 7  # decoded: then "unknown key x"
    finally:
        link.close()
    link = RawLink(node)
    try:
        body = nested(17, [])
        r = link.send_raw(len(body).to_bytes(4, "big") + body)
        assert r["err"]["code"] == "bad_frame" and "depth" in r["err"]["msg"]
    finally:
        link.close()


# -- ttl type errors are bad_request; expire beyond the longest ttl is an error ---------------


def now_ms():
    return int(time.time() * 1000)


@pytest.mark.parametrize("ttl, code", [(True, "bad_request"), (1.5, "bad_request"),
                                       ("1d", "bad_request"), (None, "bad_request"),
                                       (9_999, "ttl_out_of_range"),
                                       (14 * DAY_MS + 1, "ttl_out_of_range")])
def test_ttl_type_error_is_bad_request_range_error_is_ttl_out_of_range(node, ttl, code):
    link = RawLink(node)
    try:
        args = {"recipient": OWNER.node_id, "ns": 0, "ts": now_ms(), "ttl": ttl, "data": b"x"}
        r = link.ask("store", args)
        assert r["err"]["code"] == code and r["err"]["msg"].startswith("ttl"), r
    finally:
        link.close()


def _expire(hashes, expiry):
    """Signed expire args (v2: the signature covers the hashes and the expiry)."""
    ts = now_ms()
    sig = sign_request(OWNER.signing_key, "expire", OWNER.node_id, 0, ts, hashes=hashes,
                       expiry=expiry)
    return {"recipient": OWNER.node_id, "ns": 0, "sig_ts": ts, "sig": sig, "hashes": hashes,
            "expiry": expiry}


def test_expire_beyond_the_longest_ttl_is_an_error_and_updated_is_exact(node):
    link = RawLink(node)
    try:
        fresh = link.ask("store", {"recipient": OWNER.node_id, "ns": 0, "ts": now_ms(),
                                   "ttl": 60_000, "data": b"fresh"})["ok"]["hash"]
        old = link.ask("store", {"recipient": OWNER.node_id, "ns": 0, "ts": now_ms() - 2 * DAY_MS,
                                 "ttl": 3 * DAY_MS, "data": b"two days old"})["ok"]["hash"]
        r = link.ask("expire", _expire([fresh, old], now_ms() + 15 * DAY_MS))
        assert r["err"]["code"] == "ttl_out_of_range" and r["err"]["msg"].startswith("expiry")
        # 13 days from now: within the fresh message's cap (ts + 14 d), beyond the old one's
        r = link.ask("expire", _expire([fresh, old], now_ms() + 13 * DAY_MS))
        assert r["ok"]["updated"] == [fresh]
        r = link.ask("expire", _expire([fresh], now_ms() - 1))
        assert r["err"]["code"] == "bad_request" and r["err"]["msg"].startswith("expiry")
    finally:
        link.close()


# -- too large: the message says what the limit is and what fits -----------------------------


def test_frame_too_large_says_the_real_limits(node):
    link = RawLink(node)
    try:
        r = link.send_raw((2_000_000).to_bytes(4, "big"))
        msg = r["err"]["msg"]
        assert r["err"]["code"] == "too_large" and "1048576-byte limit of one frame" in msg
        assert "a message's data is at most 76,800 bytes" in msg and "max_bytes" not in msg
    finally:
        link.close()
    with pytest.raises(FrameTooLarge, match="at most 76,800 bytes") as e:
        encode_frame({"v": PROTOCOL_VERSION, "id": 1, "op": "store", "args": {"data": b"x" * 2_000_000}})
    assert "max_bytes" not in str(e.value)
