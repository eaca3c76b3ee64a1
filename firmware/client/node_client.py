"""The storage RPC as typed calls over a `Link`: store, retrieve, delete, expire, info.

    async with connect("127.0.0.1", 7070, node_id) as node:
        r = await node.store(recipient, sealed_bytes, ttl_ms=86_400_000)
        msgs, more = await node.retrieve(recipient_key)       # signs with the recipient's key
        await node.delete(recipient_key, [r.hash])
        print(await node.info())

Errors from the node raise the `firmware.proto.errors` class of their wire code (e.g.
`RateLimited`, `StorageFull`, `BadSignature`); a lost link raises `ConnectionError`
(`firmware.link.LinkDown`); a node whose key is not `node_id` raises `PinMismatch` before
anything is sent.
"""

import abc
from contextlib import asynccontextmanager

import nacl.signing

from firmware.clock import wall_ms
from firmware.link import Dialer, open_link
from firmware.proto.hashing import message_hash, sign_request
from firmware.proto.limits import PUBLIC_NS
from firmware.proto.responses import parse_result

__all__ = ["NodeClient", "StorageCalls", "connect"]

_TYPED_OPS = frozenset(("store", "retrieve", "delete", "expire", "info"))


class StorageCalls(abc.ABC):
    """The storage ops, for any client with ``await request(op, args, recipient=)`` returning
    the typed result: one node (`NodeClient`) or an onion path (`OnionClient`)."""

    _clock_ms = staticmethod(wall_ms)

    @abc.abstractmethod
    async def request(self, op: str, args: dict, *, recipient: bytes | None = None):
        """Send one op and return its typed result: the transport, which each client class
        defines (`NodeClient` over one link, `OnionClient` over a path)."""

    def _sig(self, signing_key, op, recipient, ns, **bound) -> dict:
        """v2: the signature also covers what the op does (``bound``: msg_hash, hashes, expiry)."""
        sig_ts = self._clock_ms()
        return {"sig_ts": sig_ts,
                "sig": sign_request(signing_key, op, recipient, ns, sig_ts, **bound)}

    async def info(self) -> dict:
        """The node's `info` map (node_id, version, time, state and whatever else it reports)."""
        return (await self.request("info", {})).to_map()

    async def store(self, recipient: bytes, data: bytes, *, ns: int = PUBLIC_NS,
                    ttl_ms: int = 86_400_000, ts: int | None = None,
                    signing_key: nacl.signing.SigningKey | None = None):
        """Deposit `data` (already encrypted) for `recipient`. Namespaces other than 0 need the
        recipient's own `signing_key`. Returns a StoreResult (.hash, .new, .expiry, .replicas)."""
        args = {"recipient": recipient, "ns": ns, "ts": self._clock_ms() if ts is None else ts,
                "ttl": ttl_ms, "data": data}
        if ns != PUBLIC_NS:
            if signing_key is None:
                raise ValueError(f"storing in namespace {ns} needs the recipient's signing key")
            args.update(self._sig(signing_key, "store", recipient, ns,
                                  msg_hash=message_hash(recipient, ns, args["ts"], data)))
        return await self.request("store", args, recipient=recipient)

    async def retrieve(self, signing_key: nacl.signing.SigningKey, *, ns: int = PUBLIC_NS,
                       after: bytes | None = None, max_count: int = 100,
                       max_bytes: int = 900_000) -> tuple[tuple, bool]:
        """Messages for the key's owner after hash `after`: (Message(.hash .ts .expiry .data)...,
        more)."""
        recipient = bytes(signing_key.verify_key)
        args = {"recipient": recipient, "ns": ns, "after": after, "max_count": max_count,
                "max_bytes": max_bytes, **self._sig(signing_key, "retrieve", recipient, ns)}
        r = await self.request("retrieve", args, recipient=recipient)
        return r.messages, r.more

    async def retrieve_all(self, signing_key, *, ns: int = PUBLIC_NS, after=None) -> list:
        """Every page of `retrieve`, in order."""
        out = []
        while True:
            msgs, more = await self.retrieve(signing_key, ns=ns, after=after)
            out.extend(msgs)
            if not more or not msgs:
                return out
            after = msgs[-1].hash

    async def delete(self, signing_key, hashes: list[bytes], *, ns: int = PUBLIC_NS) -> tuple:
        recipient = bytes(signing_key.verify_key)
        hashes = list(hashes)
        r = await self.request("delete", {"recipient": recipient, "ns": ns, "hashes": hashes,
                                          **self._sig(signing_key, "delete", recipient, ns,
                                                      hashes=hashes)},
                               recipient=recipient)
        return r.deleted

    async def expire(self, signing_key, hashes: list[bytes], expiry: int, *,
                     ns: int = PUBLIC_NS) -> tuple:
        recipient = bytes(signing_key.verify_key)
        hashes = list(hashes)
        r = await self.request("expire", {"recipient": recipient, "ns": ns, "hashes": hashes,
                                          "expiry": expiry,
                                          **self._sig(signing_key, "expire", recipient, ns,
                                                      hashes=hashes, expiry=expiry)},
                               recipient=recipient)
        return r.updated


class NodeClient(StorageCalls):
    """The storage ops on one link to one node. Safe to call from many tasks at once."""

    def __init__(self, link, clock_ms=wall_ms):
        self.link = link
        self._clock_ms = clock_ms

    async def request(self, op: str, args: dict, *, recipient: bytes | None = None,
                      timeout: float | None = None):
        """The validated result: a typed `firmware.proto.responses` object for the storage ops,
        else the `ok` map; the error code's exception raised; BadResponse if off-schema."""
        ok = await self.link.request(op, args, timeout=timeout)
        return parse_result(op, ok) if op in _TYPED_OPS else ok


@asynccontextmanager
async def connect(host: str, port: int, node_id: bytes, *, timeout: float = 10.0,
                  clock_ms=wall_ms, dialer: Dialer | None = None):
    """A `NodeClient` on a pinned link to the node `node_id` at host:port (TLS handshake within
    `timeout`), closed when the `async with` ends."""
    stream = await (dialer or Dialer()).open(host, port, node_id, timeout=timeout)
    async with open_link(stream) as link:
        yield NodeClient(link, clock_ms)
