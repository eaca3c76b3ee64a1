"""Onion packets v2: fixed-size layers (Sphinx style): build, peel one, answer, unwrap.

Why sans-IO: the relay service, the client library, tests and benchmarks all drive the same
functions with explicit bytes, time (``now_ms``) and randomness (``rand(n) -> bytes``), so every
case (wrong key, cut, tampered, stale, replayed) is an exact, deterministic test.

Why fixed sizes: with nested layers that each add their own overhead, a hop can tell from the
size how far it is from the end, and every hop sees the request's size. Here every hop of a path
receives and forwards the same number of bytes — one of ``SIZE_CLASSES`` — and every answer on
the way back has one fixed size too, so a hop learns only the class (the anchor: Sphinx and
Lightning's BOLT 4 onion, which this follows with one X25519 ephemeral key per hop).

**Packet** (what one hop receives; ``len`` is a size class)::

    0x02 | eph_pub (32) | mac (16) | body (class - 49)

    k      = BLAKE2b-512(X25519(eph, hop) || eph_pub || hop_pub, person="homenode-onion-2")
    k_mac, k_req = k[:32], k[32:]            kr = BLAKE2b-512(k, person="homenode-oresp-2")
    k_rmac, k_resp = kr[:32], kr[32:]
    mac    = BLAKE2b-128(key=k_mac, 0x02 || eph_pub || body)
    xor(K, data) = data XOR the XChaCha20 keystream of key K, nonce 0 (from block 1: what
                   XChaCha20-Poly1305 encryption XORs with; keys are single-use)

A hop checks the mac, computes ``xor(k_req, body || 0^SLOT)``, reads its routing ``SLOT`` from
the front, and the rest (the same length as ``body``) is the next hop's body. The next packet is
``0x02 | next_eph | next_mac | that`` — exactly as long as what came in. The bytes shifted in at
the end are keystream the client predicted (the "filler"), so the next mac still verifies.

**Slot** (161 bytes): ``kind (0 forward, 1 final) | ts i64be | response class | next id (32) |
next eph_pub (32) | next mac (16) | port u16 | host length | host (64, zero padded) | request
length u32``. At the final hop the request (a CBOR request map exactly as on a direct link)
follows its slot, then random padding. Room for the request: ``class - 49 - MAX_HOPS * SLOT``
whatever the path length, so nothing in a packet depends on how many hops are left.

**Answers** have one size, the response class the client put in every slot. The hop that
answers (the final one, or a hop that could not use the next one) sends
``xor(k_resp, mac16 | tag | u32be length | body | zero padding)`` with ``mac16 =
BLAKE2b-128(key=k_rmac, the rest)``; tag ``2`` = the final hop's response map, ``1`` = CBOR
``{"code", "msg"}`` (this hop could not forward). Every hop on the way back applies
``xor(k_resp, ...)`` to what it carries: the size never changes. The client removes one hop's
keystream after another and the first hop whose mac then verifies is the one that answered.

A hop that cannot open or accept a packet answers only :class:`OnionRejected`: one code
(``onion_rejected``), one fixed message, whatever the reason. ``ts`` is checked at every hop
(|now - ts| <= 60 s) and each hop remembers the ephemeral keys it opened until their ``ts``
leaves the window, so a captured packet cannot be replayed. A path has at most ``MAX_HOPS``
hops: there is no room for more slots, and no hop is told its position.

Cost (bench/onion_hop.py): bytes - a request travels in a 4 KiB or 80 KiB packet, an answer in
a 4 KiB, 80 KiB or 1020 KiB one; CPU - one X25519 per hop as before plus a keystream and a
BLAKE2b mac over the class size.
"""

import hashlib
import hmac
import struct
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions

from firmware.proto.codec import decode_map, encode_map
from firmware.proto.errors import Busy, MalformedFrame, OnionRejected, ProtocolError
from firmware.proto.limits import PROTOCOL_VERSION

__all__ = [
    "MAX_HOPS",
    "HOP_TIMEOUT_S",
    "client_timeout",
    "TS_WINDOW",
    "SIZE_CLASSES",
    "SLOT",
    "HEADER",
    "OnionRejected",
    "OnionResponseError",
    "HopFailed",
    "Hop",
    "NextHop",
    "Peeled",
    "LayerKey",
    "ReplayCache",
    "x25519_public_of",
    "request_capacity",
    "response_capacity",
    "request_class",
    "response_class_for",
    "build_onion",
    "peel",
    "seal_final",
    "seal_failure",
    "carry_response",
    "unwrap_response",
    "TAG_HOP_FAILED",
    "TAG_FINAL",
]

VERSION = b"\x02"
MAX_HOPS = 5
TS_WINDOW = 60_000  # ms either side of the hop's clock
# How long a hop waits for the next one. No hop knows its position (v2), so every hop waits the
# same; a client must wait longer than the whole chain (``client_timeout``), or it gives up
# before the hop next to a dead one can tell it which hop failed.
HOP_TIMEOUT_S = 10.0


def client_timeout(hops, hop_timeout=HOP_TIMEOUT_S):
    """The time a client gives an onion of ``hops`` hops: every hop's wait, plus slack."""
    return hops * hop_timeout + 5.0

PERSON = b"homenode-onion-2"  # 16 bytes, BLAKE2b personalisation
PERSON_RESP = b"homenode-oresp-2"
KEY_SIZE = 32
MAC_SIZE = 16
HEADER = 1 + KEY_SIZE + MAC_SIZE  # version, eph_pub, mac
MAX_HOST = 64  # bytes (UTF-8); records carry hosts of at most 64 characters
_SLOT = struct.Struct(">BqB32s32s16sHB64sI")
SLOT = _SLOT.size  # 161
SIZE_CLASSES = (4_096, 81_920, 1_044_480)  # packet and answer sizes; the last fits one frame
REQUEST_CLASSES = SIZE_CLASSES[:2]  # the largest request (a 76,800-byte store) fits the second
_RESP_HEAD = MAC_SIZE + 1 + 4
_ZERO_NONCE = b"\x00" * 24
_KIND_FORWARD, _KIND_FINAL = 0, 1

TAG_HOP_FAILED = 1
TAG_FINAL = 2

class OnionResponseError(ProtocolError):
    """A response did not open or decode (a hop misbehaved or data was cut)."""

    code = "bad_frame"


class HopFailed(ProtocolError):
    """Client side: hop ``index`` peeled its layer but could not reach or use the next hop."""

    code = "hop_failed"

    def __init__(self, index, code, msg):
        super().__init__(f"hop {index} could not forward: [{code}] {msg}")
        self.index = index
        self.next_code = code


@dataclass(frozen=True)
class NextHop:
    """Where a middle hop forwards: the next node's id (pinned on the link) and address."""

    node_id: bytes
    host: str
    port: int


@dataclass(frozen=True)
class Hop:
    """One node of a client's path: its id, X25519 onion key and where to reach it."""

    node_id: bytes
    host: str
    port: int
    x25519_pub: bytes = b""
    relayed: bool = False  # reachable only through its relays: never a client's first hop
    relay_hosts: tuple = ()  # its relays' advertised hosts (path rules count their networks)

    def onion_key(self):
        return self.x25519_pub or x25519_public_of(self.node_id)

    def as_next(self):
        return NextHop(self.node_id, self.host, self.port)


@dataclass(frozen=True)
class LayerKey:
    """What a hop (or the client, per hop) needs to make or open that hop's answer."""

    mac_key: bytes
    stream_key: bytes
    response_size: int


@dataclass(frozen=True)
class Peeled:
    """One opened layer. ``next_hop`` is None at the final hop, where ``inner`` is the request;
    otherwise ``inner`` is the packet to forward (as long as the one received)."""

    next_hop: NextHop | None
    inner: bytes
    ts: int
    key: LayerKey  # makes this hop's answer

    @property
    def is_final(self):
        return self.next_hop is None


def x25519_public_of(node_id: bytes) -> bytes:
    """The X25519 onion key of an Ed25519 node id."""
    return sodium.crypto_sign_ed25519_pk_to_curve25519(node_id)


def _layer_keys(shared, eph_pub, hop_pub):
    h = hashlib.blake2b(digest_size=64, person=PERSON)
    h.update(shared)
    h.update(eph_pub)
    h.update(hop_pub)
    k = h.digest()
    kr = hashlib.blake2b(k, digest_size=64, person=PERSON_RESP).digest()
    return k[:32], k[32:], kr[:32], kr[32:]


def _mac(key, *parts):
    h = hashlib.blake2b(key=key, digest_size=MAC_SIZE)
    for p in parts:
        h.update(p)
    return h.digest()


def _xor(key, data):
    """data XOR the XChaCha20 keystream of ``key`` (what the AEAD's encryption XORs with)."""
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(data, None, _ZERO_NONCE, key)[:-16]


def _xor_bytes(a, b):
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def request_capacity(size):
    """Bytes of request a packet of ``size`` carries (any path length)."""
    return size - HEADER - MAX_HOPS * SLOT


def response_capacity(size):
    """Bytes of answer (a CBOR response map) an answer of ``size`` carries."""
    return size - _RESP_HEAD


def request_class(n_bytes):
    """The smallest request class that carries ``n_bytes`` of request; ValueError if none."""
    for size in REQUEST_CLASSES:
        if n_bytes <= request_capacity(size):
            return size
    raise ValueError(f"a request of {n_bytes} bytes does not fit the largest onion class "
                     f"({request_capacity(REQUEST_CLASSES[-1])} bytes)")  # fmt: skip


def _answer_size(n_bytes):
    for size in SIZE_CLASSES:
        if n_bytes <= response_capacity(size):
            return size
    return SIZE_CLASSES[-1]


def response_class_for(request: bytes) -> int:
    """The answer size a client asks for by default: the smallest class that surely holds the
    answer to ``request`` (a retrieve's worst case follows its max_bytes and max_count). The
    class is visible to every hop, the request is not."""
    try:
        m = decode_map(request, "onion request")
    except MalformedFrame:
        return SIZE_CLASSES[0]
    args = m.get("args") if isinstance(m.get("args"), dict) else {}
    op = m.get("op")
    if op == "retrieve":
        max_bytes = args.get("max_bytes", 900_000)
        max_count = args.get("max_count", 100)
        if type(max_bytes) is not int or type(max_count) is not int:
            return SIZE_CLASSES[-1]
        return _answer_size(64 + max_bytes + 100 * max_count)
    if op in ("delete", "expire"):
        hashes = args.get("hashes")
        return _answer_size(64 + 34 * (len(hashes) if isinstance(hashes, list) else 1000))
    if op == "info":
        return SIZE_CLASSES[1]  # an info map grows with the node's counters
    return SIZE_CLASSES[0]


def _slot(kind, ts, resp_index, nxt=None, next_eph=b"", next_mac=b"", req_len=0):
    host = b""
    port = 0
    node_id = b""
    if nxt is not None:
        host = nxt.host.encode()
        if not 1 <= len(host) <= MAX_HOST:
            raise ValueError(f"hop host must be 1..{MAX_HOST} bytes, got {nxt.host!r:.80}")
        port, node_id = nxt.port, nxt.node_id
    return _SLOT.pack(kind, ts, resp_index, node_id, next_eph, next_mac, port, len(host), host,
                      req_len)  # fmt: skip


def build_onion(path, request: bytes, now_ms: int, rand, *, response_size=None):
    """Wrap ``request`` (a CBOR request map as on a direct link) for ``path`` (list of :class:`Hop`).

    Returns (packet for path[0], [LayerKey per hop, path order]). The packet is the smallest
    request class that fits; ``response_size`` (a size class) defaults to
    ``response_class_for(request)``. ``rand(n)`` gives n random bytes (os.urandom in production,
    seeded in tests).
    """
    n = len(path)
    if not 1 <= n <= MAX_HOPS:
        raise ValueError(f"an onion path has 1..{MAX_HOPS} hops, got {n}")
    size = request_class(len(request))
    resp_size = response_class_for(request) if response_size is None else response_size
    if resp_size not in SIZE_CLASSES:
        raise ValueError(f"response_size must be one of {SIZE_CLASSES}")
    resp_index = SIZE_CLASSES.index(resp_size)
    body_len = size - HEADER
    hops = []  # (eph_pub, k_mac, k_req, keystream of body_len + SLOT)
    keys = []
    for hop in path:
        eph_secret = rand(KEY_SIZE)
        eph_pub = sodium.crypto_scalarmult_base(eph_secret)
        hop_pub = hop.onion_key()
        shared = sodium.crypto_scalarmult(eph_secret, hop_pub)
        k_mac, k_req, k_rmac, k_resp = _layer_keys(shared, eph_pub, hop_pub)
        hops.append((eph_pub, k_mac, k_req, _xor(k_req, bytes(body_len + SLOT))))
        keys.append(LayerKey(k_rmac, k_resp, resp_size))
    # the tail each hop's peel shifts in, as the final hop will receive it
    filler = b""
    for _, _, _, stream in hops[:-1]:
        filler = _xor_bytes(filler + bytes(SLOT), stream[body_len - len(filler) : body_len + SLOT])
    final_plain = _slot(_KIND_FINAL, now_ms, resp_index, req_len=len(request)) + request
    final_plain += rand(body_len - len(final_plain))
    eph_pub, k_mac, k_req, _ = hops[-1]
    body = _xor(k_req, final_plain)[: body_len - len(filler)] + filler
    mac = _mac(k_mac, VERSION, eph_pub, body)
    for i in range(n - 2, -1, -1):
        eph_pub_next = hops[i + 1][0]
        slot = _slot(_KIND_FORWARD, now_ms, resp_index, path[i + 1].as_next(), eph_pub_next, mac)
        eph_pub, k_mac, k_req, _ = hops[i]
        body = _xor(k_req, slot + body[: body_len - SLOT])
        mac = _mac(k_mac, VERSION, eph_pub, body)
    return VERSION + hops[0][0] + mac + body, keys


def _open(blob, hop_secret, hop_pub):
    if len(blob) not in SIZE_CLASSES or blob[:1] != VERSION:
        raise OnionRejected()
    eph_pub = blob[1 : 1 + KEY_SIZE]
    mac = blob[1 + KEY_SIZE : HEADER]
    body = blob[HEADER:]
    try:
        # libsodium refuses an all-zero shared secret (low-order eph_pub) with an error.
        shared = sodium.crypto_scalarmult(hop_secret, eph_pub)
    except (nacl.exceptions.CryptoError, RuntimeError, ValueError, TypeError):
        raise OnionRejected() from None
    k_mac, k_req, k_rmac, k_resp = _layer_keys(shared, eph_pub, hop_pub)
    if not hmac.compare_digest(mac, _mac(k_mac, VERSION, eph_pub, body)):
        raise OnionRejected()
    return eph_pub, _xor(k_req, body + bytes(SLOT)), k_rmac, k_resp


def peel(blob, hop_secret, hop_pub, *, now_ms, replay):
    """Open the one layer addressed to this hop.

    ``replay``: this hop's :class:`ReplayCache`. Raises :class:`OnionRejected` for every kind
    of bad layer and :class:`Busy` only when the replay cache is full of live entries.
    """
    eph_pub, plain, k_rmac, k_resp = _open(blob, hop_secret, hop_pub)
    kind, ts, resp_index, node_id, next_eph, next_mac, port, host_len, host, req_len = (
        _SLOT.unpack_from(plain))  # fmt: skip
    rest = plain[SLOT:]
    if kind not in (_KIND_FORWARD, _KIND_FINAL) or resp_index >= len(SIZE_CLASSES):
        raise OnionRejected()
    if abs(now_ms - ts) > TS_WINDOW:
        raise OnionRejected()
    if kind == _KIND_FINAL:
        if req_len > request_capacity(len(blob)):
            raise OnionRejected()
        next_hop, inner = None, rest[:req_len]
    else:
        if not 1 <= port <= 65535 or not 1 <= host_len <= MAX_HOST:
            raise OnionRejected()
        try:
            host_text = host[:host_len].decode()
        except UnicodeDecodeError:
            raise OnionRejected() from None
        next_hop = NextHop(node_id, host_text, port)
        inner = VERSION + next_eph + next_mac + rest
    if not replay.add(eph_pub, ts, now_ms):
        raise OnionRejected()
    return Peeled(next_hop, inner, ts, LayerKey(k_rmac, k_resp, SIZE_CLASSES[resp_index]))


# -- answers -----------------------------------------------------------------------------------


def _answer(key: LayerKey, tag, body):
    """The sealed answer, or None when ``body`` does not fit the class."""
    if len(body) > response_capacity(key.response_size):
        return None
    content = bytes((tag,)) + len(body).to_bytes(4, "big") + body
    content += bytes(key.response_size - MAC_SIZE - len(content))
    return _xor(key.stream_key, _mac(key.mac_key, content) + content)


def seal_failure(key: LayerKey, code: str, msg: str) -> bytes:
    """This hop's answer when it could not use the next hop (``code``: unreachable, timeout,
    or the next hop's error code)."""
    msg = msg.encode()[:1000].decode(errors="ignore")  # fits the smallest class whatever the text
    return _answer(key, TAG_HOP_FAILED, encode_map({"code": code[:64], "msg": msg}))


def seal_final(key: LayerKey, response: bytes) -> bytes:
    """The final hop's answer: ``response`` (the CBOR response map) padded to the class the
    client asked for; an answer that does not fit becomes a ``too_large`` error map saying so."""
    sealed = _answer(key, TAG_FINAL, response)
    if sealed is not None:
        return sealed
    try:
        rid = decode_map(response, "response").get("id")
    except MalformedFrame:
        rid = None
    err = {"v": PROTOCOL_VERSION, "id": rid if type(rid) is int else None, "err": {"code": "too_large", "msg": (
        f"the answer is {len(response)} bytes, over the {response_capacity(key.response_size)} "
        "its onion class holds; ask for fewer messages or a larger response class")}}
    return _answer(key, TAG_FINAL, encode_map(err))


def carry_response(key: LayerKey, blob: bytes) -> bytes:
    """What a middle hop sends back for the next hop's answer ``blob``; OnionResponseError
    when ``blob`` is not of the class the client asked for (then answer ``seal_failure``)."""
    if type(blob) is not bytes or len(blob) != key.response_size:
        raise OnionResponseError("the next hop's answer is not of the onion's response class")
    return _xor(key.stream_key, blob)


def unwrap_response(keys, blob):
    """Client side: remove each hop's keystream in turn; return the final hop's response map.

    Raises :class:`HopFailed` (with the hop index) when a hop reports its next hop failed, and
    :class:`OnionResponseError` when no hop's mac verifies (a hop altered or cut the answer).
    """
    if not keys:
        raise OnionResponseError("no layers to open")
    if type(blob) is not bytes or len(blob) != keys[0].response_size:
        raise OnionResponseError("onion answer has the wrong size: a hop cut it or misbehaved")
    for index, key in enumerate(keys):
        blob = _xor(key.stream_key, blob)
        if not hmac.compare_digest(blob[:MAC_SIZE], _mac(key.mac_key, blob[MAC_SIZE:])):
            continue
        tag = blob[MAC_SIZE]
        length = int.from_bytes(blob[MAC_SIZE + 1 : _RESP_HEAD], "big")
        if length > response_capacity(len(blob)):
            raise OnionResponseError(f"hop {index} answered with a bad length")
        try:
            m = decode_map(blob[_RESP_HEAD : _RESP_HEAD + length], f"hop {index} answer")
        except MalformedFrame as exc:
            raise OnionResponseError(str(exc)) from None
        if tag == TAG_HOP_FAILED:
            raise HopFailed(index, str(m.get("code", "?")), str(m.get("msg", "")))
        if tag != TAG_FINAL or index != len(keys) - 1:
            raise OnionResponseError(f"hop {index} answered as the final hop but is not")
        return m
    raise OnionResponseError("onion answer does not open: a hop altered it")


class ReplayCache:
    """Ephemeral keys a hop has opened, kept until their layer ``ts`` leaves the window.

    Bounded in time (an entry lives until ts + window, after which the timestamp check refuses
    the layer anyway) and in size: when full of live entries ``add`` raises :class:`Busy`
    instead of forgetting, because forgetting early would reopen the replay hole.
    """

    def __init__(self, max_entries=100_000, window_ms=TS_WINDOW):
        self.max_entries = max_entries
        self.window_ms = window_ms
        self._seen = set()
        self._buckets = {}  # second of ts -> list of keys

    def __len__(self):
        return len(self._seen)

    def _expire(self, now_ms):
        horizon = (now_ms - self.window_ms) // 1000  # buckets wholly older than now - window
        for second in [s for s in self._buckets if s < horizon]:
            for k in self._buckets.pop(second):
                self._seen.discard(k)

    def add(self, eph_pub: bytes, ts: int, now_ms: int) -> bool:
        """Remember ``eph_pub``; False if it was already seen (a replay)."""
        if eph_pub in self._seen:
            return False
        if len(self._seen) >= self.max_entries:
            self._expire(now_ms)
            if len(self._seen) >= self.max_entries:
                raise Busy("onion replay cache full: this hop is overloaded, use another path")
        self._seen.add(eph_pub)
        self._buckets.setdefault(ts // 1000, []).append(eph_pub)
        if len(self._buckets) > 4 * (self.window_ms // 1000 + 1):
            self._expire(now_ms)
        return True

    def expire(self, now_ms):
        """Drop entries whose timestamp left the window (call now and then)."""
        self._expire(now_ms)
