"""Onion layers: build them (client), peel exactly one (relay), wrap and unwrap responses.

Why sans-IO: the relay service, the client library, tests and benchmarks all drive the same
functions with explicit bytes, time (``now_ms``) and randomness (``rand(n) -> bytes``), so every
case (wrong key, truncated, stale, replayed, too deep) is an exact, deterministic test.

Design (after oxen-storage-server's onion_req v2: one X25519 ephemeral key per hop):

Layer blob, as sent to one hop::

    0x01 | eph_pub (32) | nonce (24) | XChaCha20-Poly1305(key, nonce, aad=0x01|eph_pub, plaintext)

    key = BLAKE2b-256(shared || eph_pub || hop_pub, person=b"homenode-onion-1")
    shared = X25519(eph_secret, hop_pub) = X25519(hop_secret, eph_pub)

``hop_pub`` is the hop's X25519 key (the Ed25519 node id converted with libsodium). Hashing both
public keys binds the key to this exact exchange (as libsodium's crypto_kx does); the
personalisation keeps it apart from every other BLAKE2b use in homenode.

Plaintext is a CBOR map ``{"next": {"id", "host", "port"} | "final", "inner": bytes, "ts": int}``.
For a middle hop ``inner`` is the next hop's blob; for the final hop it is a CBOR request map
exactly as on a direct link (``{"v", "id", "op", "args"}``, docs/protocol.md) and the final
response body is the matching response map (``{"v", "id", "ok" | "err"}``). ``ts`` (ms since the epoch) is checked at every hop (|now - ts| <= 60 s) and
each hop remembers the ephemeral keys it has opened until their ``ts`` leaves the window, so a
captured onion cannot be replayed into any hop.

Responses travel back the same way; each hop seals what it sends back with its own layer key, so
the client opens one layer per hop (outermost first)::

    nonce (24) | XChaCha20-Poly1305(key, nonce, aad=b"resp", tag (1) | body)

    tag 0x00: body is the next hop's sealed response (a middle hop carried it back)
    tag 0x01: body is CBOR {"code", "msg"}: this hop peeled fine but the next hop failed
    tag 0x02: body is the CBOR response map of the final hop ({"ok": ...} or {"err": ...})

A hop that cannot open or accept its layer answers only :class:`OnionRejected`: one code
(``onion_rejected``), one fixed message, whatever the reason, so a prober learns nothing about which check failed.

Depth: the ``onion`` op carries how many hops the onion has already crossed; each forwarder adds
one, and :func:`peel` refuses a layer at position >= MAX_HOPS (more than 15 hops in all).
"""

import hashlib
from dataclasses import dataclass

import cbor2
import nacl.bindings as sodium
import nacl.exceptions

from firmware.proto.codec import decode_map
from firmware.proto.errors import Busy, MalformedFrame, OnionRejected, ProtocolError

__all__ = [
    "MAX_HOPS",
    "TS_WINDOW",
    "LAYER_OVERHEAD",
    "RESPONSE_OVERHEAD",
    "OnionRejected",
    "OnionResponseError",
    "HopFailed",
    "Hop",
    "NextHop",
    "Peeled",
    "ReplayCache",
    "layer_key",
    "x25519_public_of",
    "seal_layer",
    "open_layer",
    "build_onion",
    "peel",
    "seal_response",
    "open_response",
    "unwrap_response",
    "TAG_CARRIED",
    "TAG_HOP_FAILED",
    "TAG_FINAL",
]

MAX_HOPS = 15
TS_WINDOW = 60_000  # ms either side of the hop's clock
LAYER_VERSION = b"\x01"
PERSON = b"homenode-onion-1"  # 16 bytes, BLAKE2b personalisation
KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
LAYER_OVERHEAD = 1 + KEY_SIZE + NONCE_SIZE + TAG_SIZE
RESPONSE_AAD = b"resp"
RESPONSE_OVERHEAD = NONCE_SIZE + TAG_SIZE + 1
MAX_HOST = 253

TAG_CARRIED = 0
TAG_HOP_FAILED = 1
TAG_FINAL = 2

class OnionResponseError(ProtocolError):
    """Client side: a response layer did not open or decode (a hop misbehaved or data was cut)."""

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

    def to_cbor(self):
        return {"id": self.node_id, "host": self.host, "port": self.port}


@dataclass(frozen=True)
class Hop:
    """One node of a client's path: its id, X25519 onion key and where to reach it."""

    node_id: bytes
    host: str
    port: int
    x25519_pub: bytes = b""
    relayed: bool = False  # reachable only through its relays: never a client's first hop

    def onion_key(self):
        return self.x25519_pub or x25519_public_of(self.node_id)

    def as_next(self):
        return NextHop(self.node_id, self.host, self.port)


@dataclass(frozen=True)
class Peeled:
    """One opened layer. ``next_hop`` is None at the final hop, where ``inner`` is the request."""

    next_hop: NextHop | None
    inner: bytes
    ts: int
    key: bytes  # the layer key; seals this hop's response

    @property
    def is_final(self):
        return self.next_hop is None


def x25519_public_of(node_id: bytes) -> bytes:
    """The X25519 onion key of an Ed25519 node id."""
    return sodium.crypto_sign_ed25519_pk_to_curve25519(node_id)


def layer_key(shared: bytes, eph_pub: bytes, hop_pub: bytes) -> bytes:
    """BLAKE2b-256(shared || eph_pub || hop_pub), personalised ``homenode-onion-1``."""
    h = hashlib.blake2b(digest_size=KEY_SIZE, person=PERSON)
    h.update(shared)
    h.update(eph_pub)
    h.update(hop_pub)
    return h.digest()


def _aead_seal(key, nonce, aad, plaintext):
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def _aead_open(key, nonce, aad, ciphertext):
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)


def seal_layer(hop_pub: bytes, eph_secret: bytes, nonce: bytes, plaintext: bytes):
    """Encrypt one layer for ``hop_pub``. Returns (blob, layer key)."""
    eph_pub = sodium.crypto_scalarmult_base(eph_secret)
    shared = sodium.crypto_scalarmult(eph_secret, hop_pub)
    key = layer_key(shared, eph_pub, hop_pub)
    head = LAYER_VERSION + eph_pub
    return head + nonce + _aead_seal(key, nonce, head, plaintext), key


def open_layer(hop_secret: bytes, hop_pub: bytes, blob: bytes):
    """Decrypt one layer. Returns (plaintext, layer key, eph_pub); OnionRejected on any failure."""
    if len(blob) < LAYER_OVERHEAD or blob[:1] != LAYER_VERSION:
        raise OnionRejected()
    eph_pub = blob[1 : 1 + KEY_SIZE]
    nonce = blob[1 + KEY_SIZE : 1 + KEY_SIZE + NONCE_SIZE]
    try:
        # libsodium refuses an all-zero shared secret (low-order eph_pub) with an error.
        shared = sodium.crypto_scalarmult(hop_secret, eph_pub)
        key = layer_key(shared, eph_pub, hop_pub)
        plaintext = _aead_open(key, nonce, blob[: 1 + KEY_SIZE], blob[1 + KEY_SIZE + NONCE_SIZE :])
    except (nacl.exceptions.CryptoError, RuntimeError, ValueError, TypeError):
        raise OnionRejected() from None
    return plaintext, key, eph_pub


def _layer_plaintext(next_hop, inner, ts):
    return cbor2.dumps({"next": next_hop.to_cbor() if next_hop else "final", "inner": inner, "ts": ts})


def build_onion(path, request: bytes, now_ms: int, rand):
    """Wrap ``request`` (a CBOR request map as on a direct link) for ``path`` (list of :class:`Hop`).

    Returns (blob for path[0], [layer key per hop, path order]). ``rand(n)`` gives n random
    bytes (os.urandom in production; seeded in tests).
    """
    if not 1 <= len(path) <= MAX_HOPS:
        raise ValueError(f"an onion path has 1..{MAX_HOPS} hops, got {len(path)}")
    blob = request
    next_hop = None
    keys = []
    for hop in reversed(path):
        plaintext = _layer_plaintext(next_hop, blob, now_ms)
        blob, key = seal_layer(hop.onion_key(), rand(KEY_SIZE), rand(NONCE_SIZE), plaintext)
        keys.append(key)
        next_hop = hop.as_next()
    keys.reverse()
    return blob, keys


def _parse_plaintext(plaintext):
    try:
        m = decode_map(plaintext, "onion layer")
    except MalformedFrame:
        raise OnionRejected() from None
    if set(m) != {"next", "inner", "ts"}:
        raise OnionRejected()
    inner, ts, nxt = m["inner"], m["ts"], m["next"]
    if type(inner) is not bytes or type(ts) is not int:
        raise OnionRejected()
    if nxt == "final":
        return None, inner, ts
    if not isinstance(nxt, dict) or set(nxt) != {"id", "host", "port"}:
        raise OnionRejected()
    node_id, host, port = nxt["id"], nxt["host"], nxt["port"]
    if type(node_id) is not bytes or len(node_id) != KEY_SIZE:
        raise OnionRejected()
    if type(host) is not str or not 1 <= len(host) <= MAX_HOST:
        raise OnionRejected()
    if type(port) is not int or not 1 <= port <= 65535:
        raise OnionRejected()
    return NextHop(node_id, host, port), inner, ts


def peel(blob, hop_secret, hop_pub, *, now_ms, position, replay):
    """Open the one layer addressed to this hop.

    ``position``: hops this onion crossed before us (0 at the first hop). ``replay``: this
    hop's :class:`ReplayCache`. Raises :class:`OnionRejected` for every kind of bad layer and
    :class:`Busy` only when the replay cache is full of live entries.
    """
    if type(position) is not int or not 0 <= position < MAX_HOPS:
        raise OnionRejected()
    plaintext, key, eph_pub = open_layer(hop_secret, hop_pub, blob)
    next_hop, inner, ts = _parse_plaintext(plaintext)
    if abs(now_ms - ts) > TS_WINDOW:
        raise OnionRejected()
    if not replay.add(eph_pub, ts, now_ms):
        raise OnionRejected()
    if next_hop is not None and position + 1 >= MAX_HOPS:
        raise OnionRejected()  # the next hop would be the 16th
    return Peeled(next_hop, inner, ts, key)


def seal_response(key: bytes, nonce: bytes, tag: int, body: bytes) -> bytes:
    """What a hop sends back: ``body`` sealed with its layer key (see module doc for tags)."""
    return nonce + _aead_seal(key, nonce, RESPONSE_AAD, bytes((tag,)) + body)


def open_response(key: bytes, blob: bytes):
    """Open one response layer. Returns (tag, body); OnionResponseError when it does not open."""
    if len(blob) < RESPONSE_OVERHEAD:
        raise OnionResponseError("onion response too short: a hop cut it or misbehaved")
    try:
        plain = _aead_open(key, blob[:NONCE_SIZE], RESPONSE_AAD, blob[NONCE_SIZE:])
    except nacl.exceptions.CryptoError:
        raise OnionResponseError("onion response does not open: a hop altered it") from None
    tag = plain[0]
    if tag not in (TAG_CARRIED, TAG_HOP_FAILED, TAG_FINAL):
        raise OnionResponseError(f"onion response has unknown tag {tag}")
    return tag, plain[1:]


def unwrap_response(keys, blob):
    """Client side: open every layer; return the final hop's response map (a dict).

    Raises :class:`HopFailed` (with the hop index) when a hop reports its next hop failed, and
    :class:`OnionResponseError` when a layer is malformed.
    """
    for index, key in enumerate(keys):
        tag, body = open_response(key, blob)
        if tag == TAG_CARRIED:
            if index == len(keys) - 1:
                raise OnionResponseError("final hop answered as if it were a middle hop")
            blob = body
            continue
        try:
            m = decode_map(body, f"hop {index} response")
        except MalformedFrame as exc:
            raise OnionResponseError(str(exc)) from None
        if tag == TAG_HOP_FAILED:
            raise HopFailed(index, str(m.get("code", "?")), str(m.get("msg", "")))
        if index != len(keys) - 1:
            raise OnionResponseError(f"hop {index} answered as the final hop but is not")
        return m
    raise OnionResponseError("no layers to open")


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
