"""Relayed mode, reachable side: nodes nobody can connect to poll us for their requests.

Why long-polling and not a reverse link: our links are request/response with the connecting
side asking, and a relayed node can only connect out. So it keeps ``relay_poll`` requests open
here; whatever is addressed to it (``relay_forward`` from anyone, or our own onion forwards via
``lookup``) is handed out as the answer to one of those polls, and the relayed node sends the
result back with ``relay_reply``. Wire details: firmware/net/reachability.py and
docs/protocol.md.

A relayed node counts in its relays' networks *and* in the network of the address its record
names (placement, onion paths), and it names where its relays see it connect from. The hub
holds it to that: a poll is served only when the link's source address is in the /24 (IPv6
/48) of the poller's record's ``addrs[0]``. Otherwise a node anywhere could claim an honest
network's address through an honest relay and take that network's places. The poll carries
the poller's current record (``record``), merged first, so a node that just became relayed is
not judged by the record it had before.
"""

import itertools

import trio

from firmware.link import Link, LinkDown, LinkTimeout, result_of
from firmware.link.link import request_frame
from firmware.proto.errors import BadRequest, Busy
from firmware.proto.placement import address_nets

from .peers import args_of, require_peer

__all__ = ["RelayHub", "FORWARDABLE", "POLL_WAIT"]

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

    def __init__(self, *, max_attached=32, queue=64, poll_wait=POLL_WAIT, timeout=15.0,
                 record_of=None, on_record=None):
        """`record_of(node_id)` -> the record we hold for a poller (None: no address check, for
        tests of the polling alone); `on_record(node_id, wire)` merges the record a poll
        carries (the roster's merge_from)."""
        self.record_of = record_of
        self.on_record = on_record
        self.max_attached = max_attached
        self.queue = queue
        self.poll_wait = poll_wait
        self.timeout = timeout
        self._boxes: dict[bytes, _Box] = {}
        self._tokens = itertools.count(1)
        self.counters = {"passed_down": 0, "answered": 0, "expired": 0, "refused_address": 0}

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

    def _check_address(self, peer, conn, args):
        if self.record_of is None:
            return
        wire = args.get("record")
        if wire is not None and self.on_record is not None:
            self.on_record(peer, wire)
        rec = self.record_of(peer)
        if rec is None:
            self.counters["refused_address"] += 1
            raise BadRequest("relay_poll: this node holds no valid record of yours; send your "
                             "current record with the poll (record)", field="record")
        if address_nets(conn.client)[1] != address_nets(rec.addrs[0])[1]:
            self.counters["refused_address"] += 1
            raise BadRequest(f"relay_poll: your record names {rec.addrs[0]} but you connect "
                             f"from {conn.client}; a relayed node's record names the address "
                             "its relays see it at (reach_test's seen_ip)", field="record")

    async def op_poll(self, frame, conn, now_ms):
        peer = require_peer(conn, "relay_poll")
        self._check_address(peer, conn, args_of(frame))
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
        peer = require_peer(conn, "relay_reply")
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


class _HubLink(Link):
    """A link to a relayed node attached to this hub: requests go down as answers to its polls."""

    def __init__(self, hub, box):
        self.hub, self.box = hub, box

    async def request(self, op, args, *, timeout=None):
        token = next(self.hub._tokens)
        slot = [trio.Event(), None]
        self.box.waiting[token] = slot
        wait = self.hub.timeout if timeout is None else min(timeout, self.hub.timeout)
        try:
            try:
                self.box.send.send_nowait((token, request_frame(token, op, args)))
            except trio.WouldBlock:
                raise Busy("the relayed node has too much queued; try later") from None
            self.hub.counters["passed_down"] += 1
            with trio.move_on_after(wait):
                await slot[0].wait()
        finally:
            self.box.waiting.pop(token, None)
        if slot[1] is None:
            self.hub.counters["expired"] += 1
            raise LinkTimeout("the relayed node did not answer in time")
        try:
            return result_of(slot[1], token)
        except (TypeError, AttributeError):
            raise LinkDown("the relayed node sent a malformed answer") from None
