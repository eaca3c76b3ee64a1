"""Signed node records and the other statements a node signs with its identity key.

A node record says "node <id> is at <addrs>:<port>, runs <version>, is reachable/mapped/relayed
(through <relays>)", valid from ``issued`` to ``expires`` (ms since the epoch), sequence-numbered
so the newest one wins everywhere. Wire form (a CBOR map inside gossip and hello messages)::

    {"body": <bytes: CBOR map of the fields>, "sig": <64 bytes>}

The signature covers ``RECORD_PREFIX + body`` — the exact bytes that travel, so verification
never depends on re-encoding CBOR the same way twice. The body map has text keys
``id seq addrs port ver flags relays issued expires pow``.

v2: every record names at least one address. ``addrs[0]`` is the address placement groups the
node by (firmware/proto/placement.py), so a relayed node names the public address its relays see
it connect from (they check it when it attaches), not nothing. ``pow`` is the id's proof of work
(firmware/proto/pow.py), checked against the network's difficulty ``pow_bits``.

Also here (same key, same domain-separation rule, one prefix per statement):
- the link hello: the connecting node signs (server id, server nonce, own id);
- the reachability answer: the tested node signs (tester id, tester nonce, own id).

Pure: time comes in as ``now`` (ms). Errors are :class:`RecordError` with a short ``reason``
(``malformed``, ``bad_signature``, ``expired``, ``not_yet_valid``, ``lifetime``, ``pow``) that
gossip uses to score the peer that sent the record.
"""

import ipaddress

import nacl.exceptions
import nacl.signing

from . import pow as _pow
from .codec import decode_map, encode_map
from .errors import BadRequest, MalformedFrame

__all__ = [
    "FLAG_REACHABLE",
    "FLAG_MAPPED",
    "FLAG_RELAYED",
    "FLAG_NAMES",
    "MAX_ADDRS",
    "MAX_RELAYS",
    "MAX_LIFETIME_MS",
    "MAX_CLOCK_SKEW_MS",
    "RecordError",
    "NodeRecord",
    "make_record",
    "verify_record",
    "hello_bytes",
    "sign_hello",
    "verify_hello",
    "ping_bytes",
    "sign_ping",
    "verify_ping",
    "address_scope",
    "address_allowed",
]

RECORD_PREFIX = b"homenode/v2/record\x00"
HELLO_PREFIX = b"homenode/v2/hello\x00"
PING_PREFIX = b"homenode/v2/ping\x00"

FLAG_REACHABLE = 1  # accepts inbound links at addrs:port (direct)
FLAG_MAPPED = 2  # ... through a port mapping on its home router (UPnP-IGD / NAT-PMP)
FLAG_RELAYED = 4  # cannot be reached; reach it through one of `relays`
FLAG_NAMES = {FLAG_REACHABLE: "reachable", FLAG_MAPPED: "mapped", FLAG_RELAYED: "relayed"}
_ALL_FLAGS = FLAG_REACHABLE | FLAG_MAPPED | FLAG_RELAYED

MAX_ADDRS = 4
MAX_ADDR_LEN = 64  # an IPv6 literal is at most 45 characters; DNS names are allowed
MAX_RELAYS = 4
MAX_VERSION_LEN = 32
MAX_LIFETIME_MS = 24 * 3600 * 1000  # a node re-issues long before; caps what a replay can buy
MAX_CLOCK_SKEW_MS = 60_000  # `issued` may be this far ahead of our clock
MAX_RECORD_BODY = 1024  # bytes; a legit body is ~200
_U63 = 2**63 - 1
_KEYS = frozenset(("id", "seq", "addrs", "port", "ver", "flags", "relays", "issued", "expires",
                   "pow"))  # fmt: skip


class RecordError(BadRequest):
    """A record (or hello/ping proof) that must be refused; ``reason`` is a short machine code."""

    def __init__(self, reason, msg):
        super().__init__(f"node record refused ({reason}): {msg}")
        self.reason = reason


class NodeRecord:
    """A verified record. ``wire`` is the signed map to forward as-is (never re-signed)."""

    __slots__ = ("id", "seq", "addrs", "port", "version", "flags", "relays", "issued", "expires",
                 "wire", "pow")  # fmt: skip

    def __init__(self, id, seq, addrs, port, version, flags, relays, issued, expires, wire,
                 pow=b""):  # fmt: skip
        self.id = id
        self.seq = seq
        self.addrs = addrs
        self.port = port
        self.version = version
        self.flags = flags
        self.relays = relays
        self.issued = issued
        self.expires = expires
        self.wire = wire
        self.pow = pow

    def newer_than(self, other):
        """True when this record should replace ``other`` (same node, higher seq)."""
        return self.seq > other.seq

    def expired(self, now):
        return now >= self.expires

    @property
    def flag_names(self):
        return [name for bit, name in FLAG_NAMES.items() if self.flags & bit]

    @property
    def relayed(self):
        return bool(self.flags & FLAG_RELAYED)

    @property
    def address(self):
        """(host, port) the record advertises (for a relayed node: where its relays see it, not
        a place to connect to), or None for a record without addresses (v1 only)."""
        return (self.addrs[0], self.port) if self.addrs else None

    def __eq__(self, other):
        return isinstance(other, NodeRecord) and self.wire == other.wire

    def __hash__(self):
        return hash((self.id, self.seq))

    def __repr__(self):
        return (f"NodeRecord(id={self.id.hex()[:12]}…, seq={self.seq}, addrs={self.addrs}, "
                f"port={self.port}, flags={self.flag_names})")  # fmt: skip


def _verify_key(node_id):
    return nacl.signing.VerifyKey(node_id)


def make_record(signing_key, *, seq, addrs, port, version, flags, issued, expires, relays=(),
                pow=b""):  # fmt: skip
    """Sign a record with ``signing_key`` (a nacl SigningKey; its public key is the node id).

    ``pow`` is the id's proof of work (``firmware.proto.pow.solve``, made once and kept with the
    key); ``b""`` only passes on a network whose difficulty is 0 (test networks)."""
    body = {
        "id": bytes(signing_key.verify_key),
        "seq": seq,
        "addrs": list(addrs),
        "port": port,
        "ver": version,
        "flags": flags,
        "relays": list(relays),
        "issued": issued,
        "expires": expires,
        "pow": pow,
    }
    _check_body(body)  # refuse to sign what every peer would refuse
    raw = encode_map(body)
    sig = signing_key.sign(RECORD_PREFIX + raw).signature
    return verify_record({"body": raw, "sig": sig}, now=issued)


def _bad(msg):
    raise RecordError("malformed", msg)


def _check_int(body, key, lo, hi):
    v = body.get(key)
    if type(v) is not int or not lo <= v <= hi:
        _bad(f"{key} must be an int in {lo}..{hi}, got {v!r:.40}")
    return v


def _check_body(body):
    if set(body) != _KEYS:
        missing = sorted(_KEYS - set(body))
        extra = sorted(map(str, set(body) - _KEYS))
        _bad(f"record fields wrong (missing {missing}, unexpected {extra})")
    node_id = body["id"]
    if type(node_id) is not bytes or len(node_id) != 32:
        _bad("id must be 32 bytes (an Ed25519 public key)")
    _check_int(body, "seq", 0, _U63)
    _check_int(body, "port", 1, 65535)
    _check_int(body, "flags", 0, _ALL_FLAGS)
    issued = _check_int(body, "issued", 0, _U63)
    expires = _check_int(body, "expires", 0, _U63)
    addrs = body["addrs"]
    if type(addrs) is not list or not 1 <= len(addrs) <= MAX_ADDRS:
        _bad(f"addrs must be a list of 1..{MAX_ADDRS} host strings (a relayed node names the "
             "address its relays see)")
    proof = body["pow"]
    if type(proof) is not bytes or len(proof) > _pow.MAX_NONCE:
        _bad(f"pow must be bytes of at most {_pow.MAX_NONCE}")
    for a in addrs:
        if type(a) is not str or not 1 <= len(a) <= MAX_ADDR_LEN or a != a.strip():
            _bad(f"each address must be a host string of 1..{MAX_ADDR_LEN} characters")
    ver = body["ver"]
    if type(ver) is not str or len(ver) > MAX_VERSION_LEN:
        _bad(f"ver must be a string of at most {MAX_VERSION_LEN} characters")
    relays = body["relays"]
    if type(relays) is not list or len(relays) > MAX_RELAYS:
        _bad(f"relays must be a list of at most {MAX_RELAYS} node ids")
    for r in relays:
        if type(r) is not bytes or len(r) != 32 or r == node_id:
            _bad("each relay must be a 32-byte node id other than the record's own id")
    if body["flags"] & FLAG_RELAYED and not relays:
        _bad("a relayed record must name at least one relay")
    if expires <= issued:
        _bad("expires must be after issued")
    if expires - issued > MAX_LIFETIME_MS:
        raise RecordError("lifetime", f"records may live at most {MAX_LIFETIME_MS} ms; re-issue")


def verify_record(wire, now, *, pow_bits=0):
    """Check a record received from anyone; return a NodeRecord or raise RecordError.

    ``pow_bits``: the network's id difficulty ([network] pow_bits); 0 admits any proof."""
    if type(wire) is not dict or set(wire) != {"body", "sig"}:
        _bad("a record is a map {body: bytes, sig: bytes}")
    raw, sig = wire["body"], wire["sig"]
    if type(raw) is not bytes or type(sig) is not bytes or len(sig) != 64:
        _bad("body must be bytes and sig 64 bytes")
    if len(raw) > MAX_RECORD_BODY:
        _bad(f"record body is {len(raw)} bytes, over {MAX_RECORD_BODY}")
    try:
        body = decode_map(raw, "record")
    except MalformedFrame as exc:
        _bad(exc.msg)
    _check_body(body)
    try:  # one hash: before the signature, so junk ids cost us ~0.5 us, not ~50 us
        _pow.verify(body["id"], body["pow"], pow_bits)
    except _pow.PowError as exc:
        raise RecordError("pow", str(exc)) from None
    try:
        _verify_key(body["id"]).verify(RECORD_PREFIX + raw, sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise RecordError(
            "bad_signature", "signature does not verify against the record's id"
        ) from None
    if now >= body["expires"]:
        raise RecordError("expired", f"record expired at {body['expires']} (now {now})")
    if body["issued"] > now + MAX_CLOCK_SKEW_MS:
        raise RecordError("not_yet_valid", f"record issued at {body['issued']}, ahead of {now}")
    return NodeRecord(
        body["id"], body["seq"], tuple(body["addrs"]), body["port"], body["ver"], body["flags"],
        tuple(body["relays"]), body["issued"], body["expires"], {"body": raw, "sig": sig},
        body["pow"],
    )  # fmt: skip


def _check32(name, v):
    if type(v) is not bytes or len(v) != 32:
        raise RecordError("malformed", f"{name} must be 32 bytes")


def _proof_bytes(prefix, a, nonce, b):
    _check32("peer id", a)
    _check32("nonce", nonce)
    _check32("node id", b)
    return prefix + a + nonce + b


def hello_bytes(server_id, server_nonce, client_id):
    """What a connecting node signs to prove its identity on a link (DESIGN.md, "Links")."""
    return _proof_bytes(HELLO_PREFIX, server_id, server_nonce, client_id)


def sign_hello(signing_key, server_id, server_nonce):
    return signing_key.sign(
        hello_bytes(server_id, server_nonce, bytes(signing_key.verify_key))
    ).signature


def _verify(node_id, msg, sig, what):
    if type(sig) is not bytes or len(sig) != 64:
        raise RecordError("malformed", f"{what} signature must be 64 bytes")
    try:
        _verify_key(node_id).verify(msg, sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise RecordError("bad_signature", f"{what} signature does not verify") from None


def verify_hello(server_id, server_nonce, client_id, sig):
    """Raise RecordError unless ``sig`` is client_id's hello proof for this server and nonce."""
    _verify(client_id, hello_bytes(server_id, server_nonce, client_id), sig, "hello")


def ping_bytes(tester_id, nonce, node_id):
    """What a node signs to answer a reachability test from ``tester_id``."""
    return _proof_bytes(PING_PREFIX, tester_id, nonce, node_id)


def sign_ping(signing_key, tester_id, nonce):
    return signing_key.sign(ping_bytes(tester_id, nonce, bytes(signing_key.verify_key))).signature


def verify_ping(tester_id, nonce, node_id, sig):
    """Raise RecordError unless ``sig`` is node_id's answer to our test with ``nonce``."""
    _verify(node_id, ping_bytes(tester_id, nonce, node_id), sig, "reachability answer")


def address_scope(host):
    """What kind of address a record advertises: "loopback", "private", "public", "name" (a DNS
    name), or one a node never connects to: "link_local", "multicast", "unspecified"."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "name"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    return "private" if ip.is_private else "public"


def address_allowed(host, own_host):
    """May a node advertising ``own_host`` connect to a record's ``host``? Why: reachability
    tests connect to addresses that strangers put in records, so a record must not turn every
    node into a prober of its own machine (loopback) or of nonsense ranges. Loopback is only for
    nodes that are themselves on loopback (test clusters)."""
    scope = address_scope(host)
    if scope in ("link_local", "multicast", "unspecified"):
        return False
    return scope != "loopback" or address_scope(own_host) == "loopback"

