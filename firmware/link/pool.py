"""A pool of links to other nodes: opened on first use, shared by every caller, closed when idle.

One class for every kind of outbound link; what differs is how a link is opened, which is the
`dial` function given to the constructor:

- `direct_dial(dialer)`: a pinned TLS link (onion forwarding, the onion client);
- `firmware.net.peers.authenticated_dial(...)`: pinned TLS + the in-band node proof (gossip,
  replication, reachability tests);
- a bridge's WebSocket tunnel (firmware/bridge) for clients in censored networks.

`routes(node_id) -> Link | None`, when given, is asked first: a relayed node attached to this
node, or one reached through its relay (firmware/net/relay_hub.py), needs no connection of ours.
"""

import math
from collections.abc import Callable
from contextlib import asynccontextmanager

import trio

from firmware.logs import short_id

from .link import Link, LinkDown, open_link

__all__ = ["LinkPool", "direct_dial"]


def direct_dial(dialer):
    """``dial`` for a LinkPool: a pinned TLS link opened with `dialer` (firmware.link.Dialer)."""

    @asynccontextmanager
    async def dial(node_id, host, port, timeout):
        stream = await dialer.open(host, port, node_id, timeout=timeout)
        async with open_link(stream) as link:
            yield link

    return dial


class _Entry:
    __slots__ = ("link", "error", "ready", "closed", "last_used", "inflight")

    def __init__(self):
        self.link: Link | None = None
        self.error: BaseException | None = None
        self.ready = trio.Event()
        self.closed = trio.Event()
        self.last_used = trio.current_time()
        self.inflight = 0


class LinkPool:
    """Links by (node id, host, port). Service: ``await nursery.start(pool.run)``.

    ``await pool.request(node_id, (host, port), op, args, timeout=...)`` returns the peer's ok
    map, raises its ProtocolError, or raises LinkDown (could not connect in `connect_timeout`,
    the link broke, no answer in time - the link is then dropped and the next request
    reconnects). Links idle for `idle_s` are closed; at most `max_links` are open.
    """

    def __init__(self, dial, *, routes: Callable[[bytes], Link | None] | None = None,
                 idle_s: float = 60.0, max_links: int = 128, connect_timeout: float = 5.0):
        self._dial = dial
        self._routes = routes
        self.idle_s = idle_s
        self.max_links = max_links
        self.connect_timeout = connect_timeout
        self._entries: dict[tuple, _Entry] = {}
        self._nursery: trio.Nursery | None = None
        self.counters = {"opened": 0, "failed": 0, "closed_idle": 0}

    def open_count(self) -> int:
        return sum(1 for e in self._entries.values() if e.link is not None)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        """Hold the links' tasks; every `idle_s / 4` (at least 1 s) close the idle ones."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(max(1.0, self.idle_s / 4))
                    self._close_idle(trio.current_time())
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    async def request(self, node_id: bytes, address, op: str, args: dict, *,
                      timeout: float | None = None) -> dict:
        routed = self._routes(node_id) if self._routes is not None else None
        if routed is not None:
            return await routed.request(op, args, timeout=timeout)
        key = (node_id, address[0], address[1])
        entry = await self._entry(key)
        entry.inflight += 1
        try:
            return await entry.link.request(op, args, timeout=timeout)
        except LinkDown:
            self._discard(key, entry)
            raise
        finally:
            entry.inflight -= 1
            entry.last_used = trio.current_time()

    # -- internals -----------------------------------------------------------------------------

    async def _entry(self, key) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None and entry.link is not None and not entry.link.is_open:
            self._discard(key, entry)
            entry = None
        if entry is None:
            if self._nursery is None:
                raise RuntimeError("LinkPool.run is not running")
            if len(self._entries) >= self.max_links:
                self._close_idle(trio.current_time(), at_least_one=True)
                if len(self._entries) >= self.max_links:
                    raise LinkDown(f"{self.max_links} links open and all busy; try later")
            entry = self._entries[key] = _Entry()
            self._nursery.start_soon(self._hold, key, entry)
        if not entry.ready.is_set():  # an open link (the usual case): no scheduler round trip
            await entry.ready.wait()
        if entry.error is not None:
            raise entry.error
        return entry

    async def _hold(self, key, entry: _Entry):
        node_id, host, port = key
        why = None
        try:
            # the deadline bounds opening the link only: lifted once it is up
            with trio.CancelScope(deadline=trio.current_time() + self.connect_timeout) as scope:
                async with self._dial(node_id, host, port, self.connect_timeout) as link:
                    scope.deadline = math.inf
                    self.counters["opened"] += 1
                    entry.link = link
                    entry.ready.set()
                    await entry.closed.wait()
            if not entry.ready.is_set():
                why = f"no link within {self.connect_timeout:g} s"
        except Exception as e:  # noqa: BLE001 - any failure to connect is the caller's LinkDown
            why = f"{type(e).__name__}: {e}"
        finally:
            self._forget(key, entry)
            entry.link = None
            if not entry.ready.is_set():
                self.counters["failed"] += 1
                entry.error = LinkDown(f"{host}:{port} ({short_id(node_id)}): "
                                       f"{why or 'link closed'}")
                entry.ready.set()

    def _close_idle(self, now, at_least_one=False):
        items = sorted(self._entries.items(), key=lambda kv: kv[1].last_used)
        for key, entry in items:
            if entry.link is None:
                continue
            idle = entry.inflight == 0 and now - entry.last_used > self.idle_s
            if idle or not entry.link.is_open or (at_least_one and entry.inflight == 0):
                self.counters["closed_idle"] += 1
                self._discard(key, entry)
                at_least_one = False

    def _discard(self, key, entry: _Entry):
        self._forget(key, entry)
        entry.closed.set()

    def _forget(self, key, entry):
        if self._entries.get(key) is entry:
            del self._entries[key]
