"""A link: requests out, answers matched by id, over one byte stream.

Everything that talks to a node - the client library, onion forwarding, node-to-node gossip and
replication, a relay passing work to a relayed node - holds a `Link` and calls
``await link.request(op, args, timeout=...)``. Like `trio.abc.Stream`, the interface is tiny and
nothing branches on which implementation it got:

- `StreamLink`: frames over a byte stream (TLS, a bridge's WebSocket, a memory stream in
  tests): one reader task, one coalescing writer (`Outbox`), many requests in flight;
- the relay hub's links to relayed nodes (firmware/net/relay_hub.py).

Errors, in one place (`result_of`): the peer's error frame raises the `firmware.proto.errors`
class of its code; a link that broke, closed or never opened raises `LinkDown` (a
ConnectionError); no answer within `timeout` raises `LinkTimeout` (a LinkDown).
"""

import abc
import math
from contextlib import asynccontextmanager

import trio

from firmware.proto.errors import BadResponse, ProtocolError, error_for_code
from firmware.proto.frames import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from firmware.proto.limits import MAX_REQUEST_ID, PROTOCOL_VERSION

from .writer import Outbox

__all__ = ["Link", "LinkDown", "LinkTimeout", "StreamLink", "open_link", "result_of",
           "request_frame", "RECEIVE_CHUNK"]

RECEIVE_CHUNK = 65536


class LinkDown(ConnectionError):
    """The link could not be opened, broke, or was closed: try another node or later."""


class LinkTimeout(LinkDown):
    """The peer did not answer within the request's timeout."""


def request_frame(rid: int, op: str, args: dict) -> dict:
    """A request frame map (docs/protocol.md, "Frames")."""
    return {"v": PROTOCOL_VERSION, "id": rid, "op": op, "args": args}


def result_of(response: dict, rid=None) -> dict:
    """A response frame map -> its `ok` map, or the exception of its error code raised."""
    if response.get("v") != PROTOCOL_VERSION:
        raise BadResponse(f"protocol version must be {PROTOCOL_VERSION}, got "
                          f"{response.get('v')!r:.40}", field="v")
    err = response.get("err")
    if err is not None:
        err = err if isinstance(err, dict) else {}
        raise error_for_code(str(err.get("code")), str(err.get("msg")), request_id=rid)
    ok = response.get("ok")
    if type(ok) is not dict:
        raise BadResponse(f"response without an ok map: {response!r:.200}")
    return ok


class Link(abc.ABC):
    """Requests to one peer. Safe to call from many tasks at once."""

    @abc.abstractmethod
    async def request(self, op: str, args: dict, *, timeout: float | None = None) -> dict:
        """Send one request; return the peer's `ok` map or raise (see the module docstring)."""

    @property
    def is_open(self) -> bool:
        return True

    async def aclose(self) -> None:  # noqa: B027 - links with nothing to close inherit it
        """Close the link; requests still waiting raise LinkDown."""


class _Slot:
    __slots__ = ("done", "response", "deadline")

    def __init__(self):
        self.done = trio.Event()
        self.response = None
        self.deadline = math.inf


class StreamLink(Link):
    """Request/response frames over one byte stream; `run` reads until the stream ends.

    Deadlines: one sweeper task sleeps until the earliest pending deadline (never, when no
    request has one) instead of a cancel scope per request, which matters on a relay's hot path.
    """

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self._out = Outbox(stream)
        self._pending: dict[int, _Slot] = {}
        self._next_id = 1
        self._broken: BaseException | None = None
        self._next_deadline = math.inf
        self._wake = trio.Event()

    @property
    def is_open(self) -> bool:
        return self._broken is None and self._out.broken is None

    @property
    def inflight(self) -> int:
        return len(self._pending)

    async def request(self, op, args, *, timeout=None):
        if self._broken is not None:
            raise LinkDown(f"link is down: {self._broken}")
        if self._out.broken is not None:
            raise LinkDown(f"link broke while sending: {self._out.broken!r}")
        rid = self._next_id
        self._next_id = rid + 1 if rid < MAX_REQUEST_ID else 1
        data = encode_frame(request_frame(rid, op, args))  # FrameTooLarge: the caller's
        slot = _Slot()
        self._pending[rid] = slot
        try:
            if timeout is not None:
                slot.deadline = trio.current_time() + timeout
                if slot.deadline < self._next_deadline:
                    self._next_deadline = slot.deadline
                    self._wake.set()
            # others in flight may be sent in this same tick: let them share the write; when a
            # write is in progress the frame just joins the next one (no wait for it)
            await self._out.post(data, linger=len(self._pending) > 1)
            await slot.done.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            self._fail(LinkDown(f"link broke: {e}"))
            raise LinkDown(f"link broke: {e}") from None
        finally:
            self._pending.pop(rid, None)
        response = slot.response
        if isinstance(response, Exception):
            raise response
        return result_of(response, rid)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Read answers (and expire deadlines) until the stream ends or the task is cancelled;
        every request still waiting then raises LinkDown."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep)
                task_status.started()
                await self._read()
                nursery.cancel_scope.cancel()
        finally:
            self._fail(LinkDown("link closed"))

    async def aclose(self) -> None:
        self._fail(LinkDown("link closed"))
        await trio.aclose_forcefully(self.stream)

    # -- internals -----------------------------------------------------------------------------

    async def _read(self):
        decoder = FrameDecoder()
        try:
            while True:
                event = decoder.next_event()
                if event is NEED_DATA:
                    try:
                        data = await self.stream.receive_some(RECEIVE_CHUNK)
                    except trio.BrokenResourceError:
                        data = b""  # TLS peers often close without close_notify
                    decoder.receive_data(data)
                    continue
                if event is CLOSED:
                    raise LinkDown("the node closed the link")
                rid = event.get("id")
                slot = self._pending.get(rid) if type(rid) is int else None
                if slot is not None:
                    if not slot.done.is_set():
                        slot.response = event
                        slot.done.set()
                elif rid is None and "err" in event:  # a link-level error: the peer will close
                    result_of(event)
        except (ProtocolError, ConnectionError, trio.ClosedResourceError) as e:
            self._fail(e if isinstance(e, Exception) else LinkDown(str(e)))

    async def _sweep(self):
        while True:
            with trio.move_on_at(self._next_deadline):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            nxt = math.inf
            for slot in self._pending.values():
                if slot.deadline <= now:
                    if not slot.done.is_set():
                        slot.response = LinkTimeout("no answer in time")
                        slot.done.set()
                elif slot.deadline < nxt:
                    nxt = slot.deadline
            self._next_deadline = nxt

    def _fail(self, exc: BaseException) -> None:
        if self._broken is None:
            self._broken = exc
        for slot in list(self._pending.values()):
            if not slot.done.is_set():
                slot.response = exc if isinstance(exc, Exception) else LinkDown(str(exc))
                slot.done.set()


@asynccontextmanager
async def open_link(stream: trio.abc.Stream):
    """A running `StreamLink` over `stream` for the body of the `async with`; the stream is
    closed on exit. An exception from the body comes out as itself, not in a group."""
    link = StreamLink(stream)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            try:
                yield link
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
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
