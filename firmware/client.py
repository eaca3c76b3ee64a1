"""Client library (trio): a pinned TLS link to one node, many requests in flight on it.

    async with connect("127.0.0.1", 7070, node_id) as node:
        r = await node.store(recipient, sealed_bytes, ttl_ms=86_400_000)
        msgs, more = await node.retrieve(recipient_key)       # signs with the recipient's key
        await node.delete(recipient_key, [r.hash])
        print(await node.info())

Errors from the node raise the `firmware.proto.errors` class of their wire code (e.g.
`RateLimited`, `StorageFull`, `BadSignature`); a lost link raises `ConnectionError`; a node
whose key is not `node_id` raises `PinMismatch` before anything is sent.

End-to-end encryption helpers (`seal_for`, `open_sealed`) wrap nacl's SealedBox over the X25519
twins of Ed25519 keys, so a node only ever stores ciphertext.
"""

from contextlib import asynccontextmanager

import nacl.public
import nacl.signing
import trio

from firmware.clock import wall_ms
from firmware.identity import x25519_public_of
from firmware.links import PinMismatch, open_pinned_stream
from firmware.proto.errors import ProtocolError, error_for_code
from firmware.proto.frames import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from firmware.proto.hashing import sign_request
from firmware.proto.limits import MAX_REQUEST_ID, PROTOCOL_VERSION, PUBLIC_NS
from firmware.proto.responses import Err, parse_response

_TYPED_OPS = frozenset(("store", "retrieve", "delete", "expire", "info"))

__all__ = ["connect", "NodeClient", "PinMismatch", "seal_for", "open_sealed", "wall_ms",
           "open_pinned_link", "next_frame"]


def seal_for(recipient: bytes, plaintext: bytes) -> bytes:
    """Encrypt to the holder of the Ed25519 key `recipient` (anonymous sender)."""
    box = nacl.public.SealedBox(nacl.public.PublicKey(x25519_public_of(recipient)))
    return box.encrypt(plaintext)


def open_sealed(signing_key: nacl.signing.SigningKey, ciphertext: bytes) -> bytes:
    """Decrypt a `seal_for` ciphertext with the recipient's Ed25519 key; nacl CryptoError if not
    for us or tampered with."""
    return nacl.public.SealedBox(signing_key.to_curve25519_private_key()).decrypt(ciphertext)


async def open_pinned_link(host: str, port: int, node_id: bytes,
                           timeout: float) -> trio.SSLStream:
    """`open_pinned_stream` within `timeout` s: a stalled handshake is a ConnectionError (what
    every client of a node treats as "unreachable"), not a TooSlowError."""
    try:
        with trio.fail_after(timeout):
            return await open_pinned_stream(host, port, node_id)
    except trio.TooSlowError:
        raise ConnectionError(f"{host}:{port}: no TLS handshake within {timeout:g} s") from None


async def next_frame(stream, decoder: FrameDecoder) -> dict:
    """The next frame off `stream`, reading as much as `decoder` needs; ConnectionError once
    the node closes the link (a reset counts as a close), ProtocolError on a bad frame."""
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            decoder.receive_data(data)
            continue
        if event is CLOSED:
            raise ConnectionError("the node closed the link")
        return event


class PagedRetrieve:
    """Mixin for the clients (this one and firmware.onion_client.OnionClient) that have
    ``retrieve(signing_key, ns=, after=) -> (messages, more)``: all pages of it in one call."""

    async def retrieve_all(self, signing_key, *, ns: int = PUBLIC_NS, after=None) -> list:
        out = []
        while True:
            msgs, more = await self.retrieve(signing_key, ns=ns, after=after)
            out.extend(msgs)
            if not more or not msgs:
                return out
            after = msgs[-1].hash


class NodeClient(PagedRetrieve):
    """One link. Create with `connect`; methods are safe to call from many tasks at once."""

    def __init__(self, stream, clock_ms=wall_ms):
        self._stream = stream
        self._clock_ms = clock_ms
        self._send_lock = trio.Lock()
        self._pending: dict[int, list] = {}  # id -> [Event, response]
        self._next_id = 1
        self._broken: Exception | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def request(self, op: str, args: dict):
        """Send one request and wait for its answer: the validated result (a typed
        `firmware.proto.responses` object for the known ops, else the `ok` map), or the
        exception class of the error code raised."""
        if self._broken is not None:
            raise ConnectionError(f"link to the node is down: {self._broken}")
        rid = self._next_id
        self._next_id = rid + 1 if rid < MAX_REQUEST_ID else 1
        slot = [trio.Event(), None]
        self._pending[rid] = slot
        try:
            data = encode_frame({"v": PROTOCOL_VERSION, "id": rid, "op": op, "args": args})
            async with self._send_lock:
                await self._stream.send_all(data)
            await slot[0].wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise ConnectionError(f"link to the node broke: {e}") from None
        finally:
            self._pending.pop(rid, None)
        response = slot[1]
        if isinstance(response, Exception):
            raise response
        parsed = parse_response(response, op if op in _TYPED_OPS else None)  # BadResponse
        if isinstance(parsed, Err):
            raise parsed.exception()
        return parsed.result

    async def _reader(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        decoder = FrameDecoder()
        task_status.started()
        try:
            while True:
                event = await next_frame(self._stream, decoder)
                rid = event.get("id")
                if rid is None and "err" in event:  # link-level error: the node will close
                    err = event["err"] if isinstance(event["err"], dict) else {}
                    raise error_for_code(str(err.get("code")), str(err.get("msg")))
                slot = self._pending.get(rid) if type(rid) is int else None
                if slot is not None and not slot[0].is_set():
                    slot[1] = event
                    slot[0].set()
        except (ProtocolError, ConnectionError, trio.ClosedResourceError) as e:
            self._fail_all(e if isinstance(e, Exception) else ConnectionError(str(e)))

    def _fail_all(self, exc: Exception) -> None:
        self._broken = exc
        for slot in list(self._pending.values()):
            if not slot[0].is_set():
                slot[1] = exc
                slot[0].set()

    # -- operations -------------------------------------------------------------------------

    async def info(self) -> dict:
        """The node's `info` map (node_id, version, time, state and whatever else it reports)."""
        return (await self.request("info", {})).to_map()

    async def store(self, recipient: bytes, data: bytes, *, ns: int = PUBLIC_NS,
                    ttl_ms: int = 86_400_000, ts: int | None = None,
                    signing_key: nacl.signing.SigningKey | None = None) -> dict:
        """Deposit `data` (already encrypted) for `recipient`. Namespaces other than 0 need the
        recipient's own `signing_key`. Returns a StoreResult (.hash, .new, .expiry)."""
        args = {"recipient": recipient, "ns": ns, "ts": self._clock_ms() if ts is None else ts,
                "ttl": ttl_ms, "data": data}
        if ns != PUBLIC_NS:
            if signing_key is None:
                raise ValueError(f"storing in namespace {ns} needs the recipient's signing key")
            args.update(self._sig(signing_key, "store", recipient, ns))
        return await self.request("store", args)

    async def retrieve(self, signing_key: nacl.signing.SigningKey, *, ns: int = PUBLIC_NS,
                       after: bytes | None = None, max_count: int = 100,
                       max_bytes: int = 900_000) -> tuple[tuple, bool]:
        """Messages for the key's owner after hash `after`: (Message(.hash .ts .expiry .data)...,
        more)."""
        recipient = bytes(signing_key.verify_key)
        args = {"recipient": recipient, "ns": ns, "after": after, "max_count": max_count,
                "max_bytes": max_bytes, **self._sig(signing_key, "retrieve", recipient, ns)}
        r = await self.request("retrieve", args)
        return r.messages, r.more

    async def delete(self, signing_key, hashes: list[bytes], *, ns: int = PUBLIC_NS) -> tuple:
        recipient = bytes(signing_key.verify_key)
        r = await self.request("delete", {"recipient": recipient, "ns": ns, "hashes": hashes,
                                           **self._sig(signing_key, "delete", recipient, ns)})
        return r.deleted

    async def expire(self, signing_key, hashes: list[bytes], expiry: int, *,
                     ns: int = PUBLIC_NS) -> tuple:
        recipient = bytes(signing_key.verify_key)
        r = await self.request("expire", {"recipient": recipient, "ns": ns, "hashes": hashes,
                                           "expiry": expiry,
                                           **self._sig(signing_key, "expire", recipient, ns)})
        return r.updated

    def _sig(self, signing_key, op, recipient, ns) -> dict:
        sig_ts = self._clock_ms()
        return {"sig_ts": sig_ts, "sig": sign_request(signing_key, op, recipient, ns, sig_ts)}


@asynccontextmanager
async def connect(host: str, port: int, node_id: bytes, *, timeout: float = 10.0,
                  clock_ms=wall_ms):
    """Open a pinned link to the node `node_id` at host:port (TLS handshake within `timeout`)."""
    stream = await open_pinned_link(host, port, node_id, timeout)
    client = NodeClient(stream, clock_ms)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._reader)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader never raises, so a group holds the caller's own exception: give it back
        # unwrapped, so `except RateLimited:` around `async with connect(...)` just works.
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
    finally:
        await trio.aclose_forcefully(stream)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
