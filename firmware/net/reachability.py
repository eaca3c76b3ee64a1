"""Can the internet reach this node? Map a port, ask peers to test, else run relayed.

Why: most homes are behind a NAT. The node settles on one of four states and tells the
operator in plain words (``homenode status``, the log):

- ``direct``: peers reached us at our own address; nothing to do.
- ``mapped``: the home router forwards our port because we asked it (UPnP-IGD or NAT-PMP);
  nothing to do, but if the router forgets (reboot, setting switched off) we fall back.
- ``relayed``: nobody can connect in. We keep outbound links to a few reachable peers
  (``relay_poll`` long-polls), advertise them in our record, and serve what they pass down.
- ``unreachable``: we cannot even reach other nodes: the internet connection is down.

The peer test (op ``reach_test``) connects back to the *source address of the asking
connection* - never to an address the asker names - so a node cannot be used to probe third
parties; it returns the address it saw, which tells a NATed node its public IP.

Relayed mode, on the wire (``R`` relayed, ``P`` its relay, ``X`` anyone)::

    R -> P  relay_poll {}                      <- {"jobs": [{"token", "frame"}]}  (waits <= 20 s)
    R -> P  relay_reply {"token", "response"}  <- {}
    X -> P  relay_forward {"to": R, "op", "args"}  <- R's ok map (P queues it for R's next poll)

Only onions and the storage RPC are passed down (``FORWARDABLE``); node-to-node replication to
a relayed node is not (its swarm peers fetch from it by anti-entropy instead).
"""

import ipaddress
import random

import trio

from firmware.proto.errors import BadRequest, Busy, ProtocolError
from firmware.proto.records import FLAG_MAPPED, FLAG_REACHABLE, FLAG_RELAYED
from firmware.rpc import ConnInfo

from . import nat
from .relay_hub import FORWARDABLE, POLL_WAIT, ForwardLink, RelayHub
from .settings import NAT

__all__ = ["NAT", "ReachabilityService", "RelayHub", "decide", "advice", "install_reachability"]

MAX_REACH_TESTS = 8  # reach_test pings this node runs at once for others
MAX_NODES_ANSWER = 2000  # records in one `nodes` answer (~300 bytes each, fits a frame)

ADVICE = {
    "checking": "checking whether the internet can reach this node...",
    "direct": "reachable from the internet at {addr}; nothing to do",
    "mapped": ("reachable from the internet at {addr}: the home router forwards it to this box "
               "because the node asked it ({method}); nothing to do"),
    "relayed": ("other nodes cannot connect to this box ({why}), so it works through {relays} "
                "reachable peers instead. It still stores and relays messages, just less. To "
                "fix: switch on UPnP or NAT-PMP in your router's settings, or forward TCP port "
                "{port} to this box ({lan}) by hand"),
    "unreachable": ("this box cannot reach any other node: check its cable or Wi-Fi and that "
                    "the internet works ({why})"),
}


def decide(tests, mapping) -> str:
    """State from the peer tests (True reached us / False did not / None could not ask)."""
    if any(t is True for t in tests):
        return "mapped" if mapping is not None else "direct"
    if any(t is False for t in tests):
        return "relayed"
    return "unreachable"


def advice(state, **facts) -> str:
    defaults = {"addr": "?", "method": "?", "why": "no port mapping", "relays": 0, "port": "?",
                "lan": "?"}  # fmt: skip
    return ADVICE[state].format(**{**defaults, **facts})


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# ============================================================================ the service


class ReachabilityService:
    def __init__(self, node, network, cfg, *, log, rng=None, mapper=nat.map_port,
                 unmapper=nat.unmap_port):
        self.node = node
        self.network = network
        self.membership = network.membership
        self.links = network.links
        self.cfg = cfg
        self.log = log
        self.rng = rng or random.Random()
        self.mapper = mapper
        self.unmapper = unmapper
        self._relay_ok: dict[bytes, float] = {}  # relay id -> last successful poll (trio time)
        self._configured_advertise = None  # the operator's advertise_host/port, restored
        self._tests_running = 0
        self.hub = RelayHub()
        self.state = "checking"
        self.advice = advice("checking")
        self.mapping: nat.Mapping | None = None
        self.seen_ip: str | None = None
        self.relays: list[bytes] = []
        self._relay_scope: trio.CancelScope | None = None
        self._relay_nursery = None
        self.counters = {"checks": 0, "relayed_served": 0}

    def install(self):
        h = self.node.handler
        h.add_op("reach_test", self.op_reach_test)
        h.add_op("nodes", self.op_nodes)
        self.hub.install(h)
        h.add_info(self.info)
        self.node.add_service("reachability", self.run)
        self.node.onion.links.reverse = self.hub.lookup
        self.node.onion.links.route = self.route
        self.membership.pinger = self.ping_via_relay

    async def ping_via_relay(self, identity, record, *, timeout=5.0):
        """Membership's reachability test, also for relayed records (through their relays)."""
        import os

        from firmware.proto.records import RecordError, verify_ping

        from .peers import ping

        if not record.flags & FLAG_RELAYED:
            return await ping(identity, record, timeout=timeout)
        if self.hub.lookup(record.id) is not None:  # attached to us: we are its relay
            link = self.hub.lookup(record.id)
        else:
            link = self.route(record.id)
        if link is None:
            return False
        nonce = os.urandom(32)
        try:
            with trio.fail_after(timeout):
                ok = await link.request("ping", {"tester": identity.node_id, "nonce": nonce})
            verify_ping(identity.node_id, nonce, record.id, ok.get("sig"))
            return True
        except (ConnectionError, OSError, ProtocolError, RecordError, trio.TooSlowError):
            return False

    def info(self):
        out = {"reachability": self.state, "reachability_advice": self.advice,
               "relayed_for": len(self.hub.attached()),
               "relayed_passed_down": self.hub.counters["passed_down"]}
        if self.mapping:
            out["port_mapping"] = (f"{self.mapping.method} {self.mapping.external_ip}:"
                                   f"{self.mapping.external_port}")
        if self.relays:
            out["relays"] = ",".join(r[:4].hex() for r in self.relays)
        return out

    def route(self, node_id):
        """A link to a relayed node through one of its relays, or None to connect directly."""
        st = self.membership.state
        rec = st.get(node_id) if st is not None else None
        if rec is None or not rec.flags & FLAG_RELAYED:
            return None
        for relay in rec.relays:
            r = st.get(relay)
            if r is not None and r.address is not None:
                return ForwardLink(self.links, relay, r.address, node_id)
        return None

    async def op_nodes(self, frame, conn, now_ms):
        """Live node records for clients building onion paths (open to anyone: records are
        public and signed; the client verifies each one)."""
        st = self.membership.state
        if st is None:
            raise Busy("the node is still starting its network service; retry in a moment")
        return {"records": [r.wire for r in st.live_records()[:MAX_NODES_ANSWER]]}

    # -- serving the peer test -----------------------------------------------------------------

    async def op_reach_test(self, frame, conn, now_ms):
        from .peers import ping

        args = frame.get("args") or {}
        port = args.get("port")
        node_id = conn.peer_id or args.get("node_id")
        if type(port) is not int or not 1 <= port <= 65535 or type(node_id) is not bytes:
            raise BadRequest("reach_test needs port (1..65535) and node_id (or a hello first)",
                             field="args")

        class _Target:  # what ping needs of a record
            id = node_id
            address = (conn.client, port)

        if self._tests_running >= MAX_REACH_TESTS:
            raise Busy("this node is running enough reachability tests; ask another peer")
        self._tests_running += 1
        try:
            reached = await ping(self.node.identity, _Target(), timeout=5.0)
        finally:
            self._tests_running -= 1
        return {"reachable": reached, "seen_ip": conn.client}

    # -- the check loop -------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            self._relay_nursery = nursery
            task_status.started()
            await self.membership.ready.wait()
            try:
                while True:
                    try:
                        await self.check()
                    except Exception as e:  # a check bug must not take the node down
                        self.log.error("reachability_check_failed",
                                       error=f"{type(e).__name__}: {e}")
                    wait = self.cfg.check_interval
                    if self.mapping is not None and self.mapping.lifetime_s:
                        wait = min(wait, self.mapping.lifetime_s / 2)
                    if self.state in ("unreachable", "checking", "relayed"):
                        wait = min(wait, 10.0 if self.state != "relayed" else 60.0)
                    await trio.sleep(wait)
            finally:
                await self._unmap()

    async def _unmap(self):
        """On shutdown, give the router its port back (best effort, two seconds at most)."""
        m = self.mapping
        if m is None or self.unmapper is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self.unmapper(m)
                self.log.info("port_unmapped", method=m.method, external_port=m.external_port)
            except (nat.NatError, OSError) as e:
                self.log.debug("port_unmap_failed", error=str(e)[:200])

    def _peers(self):
        st = self.membership.state
        me = self.node.identity.node_id
        out = []
        if st is not None:
            for nid in st.live_ids():
                rec = st.get(nid)
                if nid != me and rec is not None and rec.address and not rec.flags & FLAG_RELAYED:
                    out.append((nid, rec.address))
        if not out:
            out = [(nid, (h, p)) for h, p, nid in self.membership.bootstrap if nid != me]
        self.rng.shuffle(out)
        return out

    async def check(self):
        self.counters["checks"] += 1
        host, port = self.node.address
        reasons = []
        if self.cfg.mode == "off":
            reasons.append("port mapping is off in the config")
        elif _is_loopback(host):
            reasons.append("listening on loopback only")
        else:
            methods = ("upnp", "natpmp") if self.cfg.mode == "auto" else (self.cfg.mode,)
            mapping, reasons = await self.mapper(port, lease_s=self.cfg.lease, methods=methods)
            for reason in reasons:
                self.log.debug("port_mapping_failed", reason=reason)
            if mapping is not None and mapping != self.mapping:
                self.log.info("port_mapped", method=mapping.method,
                              external=f"{mapping.external_ip}:{mapping.external_port}")
            self.mapping = mapping
        test_port = self.mapping.external_port if self.mapping else port
        peers = self._peers()[: self.cfg.test_peers]
        results = [None] * len(peers)

        async def ask(i, nid, addr):
            try:
                ok = await self.links.request(nid, addr, "reach_test",
                                              {"port": test_port, "node_id": self.node.identity.node_id},
                                              timeout=10.0)
                results[i] = bool(ok.get("reachable"))
                if type(ok.get("seen_ip")) is str:
                    self.seen_ip = ok["seen_ip"]
            except (ConnectionError, ProtocolError, OSError, trio.TooSlowError):
                results[i] = None

        async with trio.open_nursery() as n:
            for i, (nid, addr) in enumerate(peers):
                n.start_soon(ask, i, nid, addr)
        if not peers:
            self.state = "checking"
            self.advice = ("no other node known yet, so nobody can test whether this box is "
                           "reachable; add bootstrap peers ([network] bootstrap)")
            return
        state = decide(results, self.mapping)
        await self._settle(state, peers, reasons, port)

    async def _settle(self, state, peers, reasons, port):
        m = self.membership
        if state == "relayed":
            await self._ensure_relays(peers)
        else:
            self._stop_relays()
        if self._configured_advertise is None:
            self._configured_advertise = (m.cfg.advertise_host, m.cfg.advertise_port)
        if state == "mapped":
            # membership signs our record from its [network] advertise_* settings: point them
            # at the router's side of the mapping while it lasts
            m.cfg.advertise_host, m.cfg.advertise_port = (self.mapping.external_ip,
                                                          self.mapping.external_port)
            flags, relays = FLAG_REACHABLE | FLAG_MAPPED, []
        else:
            m.cfg.advertise_host, m.cfg.advertise_port = self._configured_advertise
            if state == "relayed":
                flags, relays = FLAG_RELAYED, list(self.relays)
            else:
                flags, relays = FLAG_REACHABLE, []
                if (state == "direct" and not m.cfg.advertise_host and self.seen_ip
                        and self.node.address[0] in ("0.0.0.0", "::", "")):
                    # listening on every interface with no address configured: advertise the
                    # one peers just reached us at
                    m.cfg.advertise_host = self.seen_ip
        own = m.state.own
        host, bound_port = self.node.address
        want_addr = (m.cfg.advertise_host or host, m.cfg.advertise_port or bound_port)
        if own.flags != flags or list(own.relays) != relays or (
                want_addr[0] not in ("0.0.0.0", "::", "") and own.address != want_addr):
            m.reissue(flags=flags, relays=relays)
        lan = self.mapping.internal_ip if self.mapping else self.node.address[0]
        addr = (f"{self.mapping.external_ip}:{self.mapping.external_port}" if self.mapping
                else f"{self.seen_ip or self.node.address[0]}:{port}")
        text = advice(state, addr=addr, method=self.mapping.method if self.mapping else "?",
                      why="; ".join(reasons) or "no port mapping", relays=len(self.relays),
                      port=port, lan=lan)
        if state != self.state or text != self.advice:
            level = "info" if state in ("direct", "mapped") else "warning"
            self.log.event(level, "reachability", state=state, advice=text)
        self.state, self.advice = state, text

    # -- relayed mode (R side) ------------------------------------------------------------------

    def _stop_relays(self):
        if self._relay_scope is not None:
            self._relay_scope.cancel()
            self._relay_scope = None
        self.relays = []

    async def _ensure_relays(self, peers):
        if self._relay_scope is not None and self.relays:
            now = trio.current_time()
            if all(now - self._relay_ok.get(r, now) < 3 * POLL_WAIT for r in self.relays):
                return
            self.log.info("relays_replaced", old=",".join(r[:4].hex() for r in self.relays))
            self._stop_relays()  # a relay stopped answering: pick again (it may still be first)
            peers = [p for p in peers if now - self._relay_ok.get(p[0], now) < 3 * POLL_WAIT] \
                + [p for p in peers if now - self._relay_ok.get(p[0], now) >= 3 * POLL_WAIT]
        chosen = peers[: self.cfg.relays]
        if not chosen:
            return
        self.relays = [nid for nid, _ in chosen]
        for nid in self.relays:
            self._relay_ok.setdefault(nid, trio.current_time())
        scope = trio.CancelScope()
        self._relay_scope = scope

        async def keep():
            with scope:
                async with trio.open_nursery() as n:
                    for nid, addr in chosen:
                        for _ in range(self.cfg.polls_per_relay):
                            n.start_soon(self._poll_loop, nid, addr)

        self._relay_nursery.start_soon(keep)

    async def _poll_loop(self, nid, addr):
        from .peers import PeerUnavailable

        backoff = 1.0
        while True:
            try:
                ok = await self.links.request(nid, addr, "relay_poll", {}, timeout=POLL_WAIT + 10)
                backoff = 1.0
                self._relay_ok[nid] = trio.current_time()
            except (PeerUnavailable, ProtocolError, ConnectionError) as e:
                self.log.debug("relay_poll_failed", relay=nid[:4].hex(), error=str(e)[:200])
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            for job in ok.get("jobs") or []:
                if isinstance(job, dict) and type(job.get("token")) is int:
                    try:
                        await self._serve(nid, addr, job)
                    except Exception as e:  # one bad job must not stop relaying
                        self.log.error("relay_job_failed", error=f"{type(e).__name__}: {e}")

    async def _serve(self, nid, addr, job):
        frame = job.get("frame")
        if not isinstance(frame, dict) or frame.get("op") not in FORWARDABLE:
            response = {"v": 1, "id": job["token"], "err": {"code": "unknown_op",
                        "msg": "only onions and storage requests are passed to relayed nodes"}}
        else:
            conn = ConnInfo(f"relay/{addr[0]}", 0)
            response = await self.node.handler.respond(frame, conn, self.node.clock_ms())
        self.counters["relayed_served"] += 1
        try:
            await self.links.request(nid, addr, "relay_reply",
                                     {"token": job["token"], "response": response})
        except (ConnectionError, ProtocolError) as e:
            self.log.debug("relay_reply_failed", relay=nid[:4].hex(), error=str(e)[:200])


def install_reachability(node):
    """NAT / reachability for ``node`` (needs node.network and node.onion); None if no network."""
    if getattr(node, "network", None) is None:
        return None
    svc = ReachabilityService(node, node.network, node.cfg.nat, log=node.log)
    svc.install()
    return svc
