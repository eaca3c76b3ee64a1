"""Relayed mode, reachable side: nodes nobody can connect to poll us for their requests.

Why long-polling and not a reverse link: our links are request/response with the connecting
side asking, and a relayed node can only connect out. So it keeps ``relay_poll`` requests open
here; whatever is addressed to it (``relay_forward`` from anyone, or our own onion forwards via
``lookup``) is handed out as the answer to one of those polls, and the relayed node sends the
result back with ``relay_reply``. Wire details: firmware/net/reachability.py and
docs/protocol.md.
"""

import itertools

import trio

from firmware.proto.errors import BadRequest, Busy, error_for_code

__all__ = ["RelayHub", "ForwardLink", "FORWARDABLE", "POLL_WAIT"]

FORWARDABLE = frozenset(("onion", "store", "retrieve", "delete", "expire", "info", "ping"))
POLL_WAIT = 20.0


class _Box:
    def __init__(self, capacity):
        self.send, self.receive = trio.open_memory_channel(capacity)
        self.waiting: dict[int, list] = {}
        self.last_poll = trio.current_time()
        self.polls = 0


class RelayHub:
    """Served by every reachable node: relayed peers poll it for work addressed to them."""

    def __init__(self, *, max_attached=32, queue=64, poll_wait=POLL_WAIT, timeout=15.0):
        self.max_attached = max_attached
        self.queue = queue
        self.poll_wait = poll_wait
        self.timeout = timeout
        self._boxes: dict[bytes, _Box] = {}
        self._tokens = itertools.count(1)
        self.counters = {"passed_down": 0, "answered": 0, "expired": 0}

    def install(self, handler):
        handler.add_op("relay_poll", self.op_poll)
        handler.add_op("relay_reply", self.op_reply)
        handler.add_op("relay_forward", self.op_forward)

    def attached(self):
        now = trio.current_time()
        return [n for n, b in self._boxes.items() if b.polls or now - b.last_poll < 2 * self.poll_wait]

    def _prune(self):
        """Forget relayed peers that stopped polling (nothing of theirs is waiting)."""
        live = set(self.attached())
        for nid, box in list(self._boxes.items()):
            if nid not in live and not box.waiting:
                del self._boxes[nid]

    def lookup(self, node_id):
        """A link-like object for ``node_id`` if it is attached to us, else None."""
        box = self._boxes.get(node_id)
        if box is None or node_id not in self.attached():
            return None
        return _HubLink(self, box)

    async def op_poll(self, frame, conn, now_ms):
        peer = _peer(conn, "relay_poll")
        box = self._boxes.get(peer)
        if box is None:
            if len(self._boxes) >= self.max_attached:
                self._prune()
            if len(self._boxes) >= self.max_attached:
                raise Busy("this node relays for enough peers already; pick another relay")
            box = self._boxes[peer] = _Box(self.queue)
        box.polls += 1
        box.last_poll = trio.current_time()
        try:
            with trio.move_on_after(self.poll_wait):
                token, frame_out = await box.receive.receive()
                return {"jobs": [{"token": token, "frame": frame_out}]}
            return {"jobs": []}
        finally:
            box.polls -= 1
            box.last_poll = trio.current_time()

    async def op_reply(self, frame, conn, now_ms):
        peer = _peer(conn, "relay_reply")
        args = frame.get("args") or {}
        token, response = args.get("token"), args.get("response")
        if type(token) is not int or type(response) is not dict:
            raise BadRequest("relay_reply needs token (int) and response (map)", field="args")
        slot = self._boxes.get(peer).waiting.get(token) if peer in self._boxes else None
        if slot is not None and not slot[0].is_set():
            slot[1] = response
            slot[0].set()
            self.counters["answered"] += 1
        return {}

    async def op_forward(self, frame, conn, now_ms):
        args = frame.get("args") or {}
        to, op, inner = args.get("to"), args.get("op"), args.get("args")
        if type(to) is not bytes or op not in FORWARDABLE or type(inner) is not dict:
            raise BadRequest("relay_forward needs to (node id), op (one of "
                             f"{', '.join(sorted(FORWARDABLE))}) and args (map)", field="args")
        link = self.lookup(to)
        if link is None:
            raise Busy("that node is not attached to this relay right now; try another relay")
        return await link.request(op, inner)


class _HubLink:
    def __init__(self, hub, box):
        self.hub, self.box = hub, box

    async def request(self, op, args):
        token = next(self.hub._tokens)
        slot = [trio.Event(), None]
        self.box.waiting[token] = slot
        try:
            try:
                self.box.send.send_nowait((token, {"v": 1, "id": token, "op": op, "args": args}))
            except trio.WouldBlock:
                raise Busy("the relayed node has too much queued; try later") from None
            self.hub.counters["passed_down"] += 1
            with trio.move_on_after(self.hub.timeout):
                await slot[0].wait()
        finally:
            self.box.waiting.pop(token, None)
        if slot[1] is None:
            self.hub.counters["expired"] += 1
            raise ConnectionError("the relayed node did not answer in time")
        response = slot[1]
        if "err" in response:
            err = response["err"] if isinstance(response["err"], dict) else {}
            raise error_for_code(str(err.get("code")), str(err.get("msg")))
        ok = response.get("ok")
        if not isinstance(ok, dict):
            raise ConnectionError("the relayed node sent a malformed answer")
        return ok


class ForwardLink:
    """Reach a relayed node through one of its relays (relay_forward)."""

    def __init__(self, links, relay_id, relay_addr, target):
        self.links, self.relay_id, self.relay_addr, self.target = links, relay_id, relay_addr, target

    async def request(self, op, args):
        return await self.links.request(self.relay_id, self.relay_addr, "relay_forward",
                                        {"to": self.target, "op": op, "args": args})


def _peer(conn, op):
    if conn.peer_id is None:
        raise BadRequest(f"op {op!r} is for nodes only: send 'challenge' then 'hello' first")
    return conn.peer_id
