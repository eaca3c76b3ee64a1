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

from firmware.link import LinkDown
from firmware.logs import short_id
from firmware.proto.errors import BadRequest, Busy, ProtocolError
from firmware.proto.records import FLAG_MAPPED, FLAG_REACHABLE, FLAG_RELAYED

from . import nat
from .peers import ping
from .relay_hub import POLL_WAIT

__all__ = ["ReachOps", "ReachabilityService", "decide", "advice"]

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



# ============================================================================ ops


class ReachOps:
    """`reach_test` (connect back to whoever asks) and `nodes` (the live records, for clients)."""

    def __init__(self, identity, dialer, roster):
        self.identity, self.dialer, self.roster = identity, dialer, roster
        self._tests_running = 0

    async def op_nodes(self, frame, conn, now_ms):
        """Live node records for clients building onion paths (open to anyone: records are
        public and signed; the client verifies each one)."""
        return {"records": [r.wire for r in self.roster.state.live_records()[:MAX_NODES_ANSWER]]}

    async def op_reach_test(self, frame, conn, now_ms):
        args = frame.get("args") or {}
        port = args.get("port")
        node_id = conn.peer_id or args.get("node_id")
        if type(port) is not int or not 1 <= port <= 65535 or type(node_id) is not bytes:
            raise BadRequest("reach_test needs port (1..65535) and node_id (or a hello first)",
                             field="args")
        if self._tests_running >= MAX_REACH_TESTS:
            raise Busy("this node is running enough reachability tests; ask another peer")
        self._tests_running += 1
        try:  # only ever the source address of this connection: never a third party
            reached = await ping(self.dialer, self.identity, node_id, (conn.client, port),
                                 timeout=5.0)
        finally:
            self._tests_running -= 1
        return {"reachable": reached, "seen_ip": conn.client}


# ============================================================================ the service


class ReachabilityService:
    """Every `check_interval`: map the port if we can, ask peers to connect back, settle on
    direct / mapped / relayed / unreachable, and re-sign our record to match."""

    def __init__(self, cfg, identity, roster, peer_pool, advertised, relayed_mode, *, bootstrap,
                 log, rng=None, mapper=nat.map_port, unmapper=nat.unmap_port):
        """`cfg`: the [nat] section; `bootstrap()` -> [(host, port, node_id)] candidates."""
        self.cfg = cfg
        self.identity = identity
        self.roster = roster
        self.pool = peer_pool
        self.advertised = advertised
        self.relayed = relayed_mode
        self.bootstrap = bootstrap
        self.log = log
        self.rng = rng or random.Random()
        self.mapper = mapper
        self.unmapper = unmapper
        self.state = "checking"
        self.advice = advice("checking")
        self.mapping: nat.Mapping | None = None
        self.counters = {"checks": 0}

    def info(self):
        out = {"reachability": self.state, "reachability_advice": self.advice}
        if self.mapping:
            out["port_mapping"] = (f"{self.mapping.method} {self.mapping.external_ip}:"
                                   f"{self.mapping.external_port}")
        if self.relayed.relays:
            out["relays"] = ",".join(short_id(r) for r in self.relayed.relays)
        out["relayed_served"] = self.relayed.served
        return out

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            while True:
                try:
                    await self.check()
                except Exception as e:  # a check bug must not take the node down
                    self.log.error("reachability_check_failed", error=f"{type(e).__name__}: {e}")
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
        st = self.roster.state
        me = self.identity.node_id
        out = []
        for nid in st.live_ids():
            rec = st.get(nid)
            if nid != me and rec is not None and rec.address and not rec.flags & FLAG_RELAYED:
                out.append((nid, rec.address))
        if not out:
            out = [(nid, (h, p)) for h, p, nid in self.bootstrap() if nid != me]
        self.rng.shuffle(out)
        return out

    async def check(self):
        self.counters["checks"] += 1
        host, port = self.advertised.bound
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
        seen = []

        async def ask(i, nid, addr):
            try:
                ok = await self.pool.request(nid, addr, "reach_test",
                                             {"port": test_port, "node_id": self.identity.node_id},
                                             timeout=10.0)  # fmt: skip
                results[i] = bool(ok.get("reachable"))
                if type(ok.get("seen_ip")) is str:
                    seen.append(ok["seen_ip"])
            except (LinkDown, ProtocolError, OSError):
                results[i] = None

        async with trio.open_nursery() as n:
            for i, (nid, addr) in enumerate(peers):
                n.start_soon(ask, i, nid, addr)
        if not peers:
            self.state = "checking"
            self.advice = ("no other node known yet, so nobody can test whether this box is "
                           "reachable; add bootstrap peers ([network] bootstrap)")
            return
        if seen:
            self.advertised.seen_host = seen[-1]
        await self._settle(decide(results, self.mapping), peers, reasons, port)

    async def _settle(self, state, peers, reasons, port):
        if state == "relayed":
            self._ensure_relays(peers)
        else:
            self.relayed.stop()
        if state == "mapped":
            self.advertised.mapped = (self.mapping.external_ip, self.mapping.external_port)
            flags, relays = FLAG_REACHABLE | FLAG_MAPPED, []
        else:
            self.advertised.mapped = None
            if state == "relayed":
                flags, relays = FLAG_RELAYED, list(self.relayed.relays)
            else:
                flags, relays = FLAG_REACHABLE, []
        self.roster.reissue_if_changed(flags=flags, relays=relays)
        bound_host = self.advertised.bound[0]
        lan = self.mapping.internal_ip if self.mapping else bound_host
        addr = (f"{self.mapping.external_ip}:{self.mapping.external_port}" if self.mapping
                else f"{self.advertised.seen_host or bound_host}:{port}")
        text = advice(state, addr=addr, method=self.mapping.method if self.mapping else "?",
                      why="; ".join(reasons) or "no port mapping", relays=len(self.relayed.relays),
                      port=port, lan=lan)
        if state != self.state or text != self.advice:
            level = "info" if state in ("direct", "mapped") else "warning"
            self.log.event(level, "reachability", state=state, advice=text)
        self.state, self.advice = state, text

    def _ensure_relays(self, peers):
        now = trio.current_time()
        if self.relayed.healthy(now):
            return
        if self.relayed.relays:
            self.log.info("relays_replaced", old=",".join(short_id(r) for r in self.relayed.relays))
        ok = self.relayed.last_ok
        # relays that answered lately first (a relay that stopped answering may still be first)
        peers = [p for p in peers if now - ok.get(p[0], now) < 3 * POLL_WAIT] + \
            [p for p in peers if now - ok.get(p[0], now) >= 3 * POLL_WAIT]
        self.relayed.start(peers[: self.cfg.relays])
