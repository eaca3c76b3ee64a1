"""The storage RPC's effect on this node: a parsed, authenticated, admitted request -> its result.

Only the write stage of firmware/serve/pipeline.py: no rate limits, signatures or admission
here (the pipeline did those), so each op is a few lines against `MessageStore`, and `info` is
the node's status map assembled from the sources the node lists when it builds this.
"""

import time
from collections.abc import Callable

from firmware import __version__
from firmware.proto.copies import delete_proof, store_proof
from firmware.proto.hashing import message_hash
from firmware.proto.limits import PUBLIC_NS, max_ttl
from firmware.store import Message

__all__ = ["StorageOps"]


class StorageOps:
    """`await ops.run(req, now_ms)` for store / retrieve / delete / expire / info.

    `info_sources`: callables returning extra `info` fields (the listener's counters, device
    health, membership...), merged in order; they are called at most once per `info_cache_ms`
    of request time, because under load many `info`s arrive per millisecond and a status a
    millisecond old is still current (0: on every call).
    """

    def __init__(self, store, node_id: bytes, *, state: Callable[[], str] = lambda: "serving",
                 info_sources=(), monotonic=time.monotonic, info_cache_ms: int = 1):
        self.store = store
        self.node_id = node_id
        self.state = state
        self.info_sources = tuple(info_sources)
        self._monotonic = monotonic
        self._started = monotonic()
        self.info_cache_ms = info_cache_ms
        self._extra: dict | None = None
        self._extra_ms = 0
        self._ops = {"store": self._store, "retrieve": self._retrieve, "delete": self._delete,
                     "expire": self._expire, "info": self._info}

    async def run(self, req, now_ms: int) -> dict:
        return await self._ops[req.op](req, now_ms)

    async def _store(self, req, now_ms):
        h = message_hash(req.recipient, req.ns, req.ts, req.data)
        # a private namespace's message keeps its owner's signature (over the hash): every copy
        # carries it, and every swarm member checks it (firmware/proto/copies.py)
        proof = store_proof(req.sig_ts, req.sig) if req.ns != PUBLIC_NS else None
        is_new, expiry = await self.store.put(
            Message(h, req.recipient, req.ns, req.ts, req.ts + req.ttl, req.data, proof)
        )
        return {"hash": h, "new": is_new, "expiry": expiry}

    async def _retrieve(self, req, now_ms):
        messages, more = await self.store.retrieve(
            req.recipient, req.ns, req.after, req.max_count, req.max_bytes
        )
        return {
            "messages": [
                {"hash": m.hash, "ts": m.ts, "expiry": m.expiry, "data": m.data} for m in messages
            ],
            "more": more,
        }

    async def _delete(self, req, now_ms):
        # the tombstones keep the owner's signed delete: a swarm member that missed it is
        # shown it later and checks it itself (firmware/net/replication.py)
        return {"deleted": await self.store.delete(req.recipient, req.ns, list(req.hashes),
                                                   proof=delete_proof(req.sig_ts, req.sig))}

    async def _expire(self, req, now_ms):
        updated = await self.store.set_expiry(
            req.recipient, req.ns, list(req.hashes), req.expiry, max_ttl_ms=max_ttl(req.ns)
        )
        return {"updated": updated}

    async def _info(self, req, now_ms):
        return self.info(now_ms)

    def info(self, now_ms: int) -> dict:
        """The node's status map (the `info` op, `homenode status`, the status page)."""
        totals = self.store.totals()
        info = {
            "node_id": self.node_id,
            "version": __version__,
            "time": now_ms,
            "state": self.state(),
            "uptime_s": int(self._monotonic() - self._started),
            "messages": totals["count"],
            "bytes": totals["bytes"],
            "quota_bytes": self.store.quota_bytes,
        }
        info.update(self._extra_at(now_ms))
        return info

    def _extra_at(self, now_ms: int) -> dict:
        extra = self._extra
        if extra is None or not 0 <= now_ms - self._extra_ms < self.info_cache_ms:
            extra = {}
            for source in self.info_sources:
                extra.update(source())
            self._extra, self._extra_ms = extra, now_ms
        return extra
