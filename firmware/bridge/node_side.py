"""How a bridge node joins the network without telling anyone where it is.

The bridge's address is what a censor wants: one address, one firewall rule. Every other node
may be the censor's, so no node but the few the owner chose - the bridge's **relays**, the
nodes in its `[network] bootstrap` - ever learns it (docs/bridge.md, "Hiding the bridge in the
network", has the reasoning). What differs from an ordinary node, each part handed to the node's
ordinary services as a constructor argument (`BridgeMode`, built once by `Node`):

- `RelaysOnlyDialer`: the node's dialer, refusing every connection but those to its relays, so
  no gossip, reachability test, replication or reach test ever opens a connection elsewhere;
- `RelaysOnlyPool`: the onion relay's pool of next hops. An onion the bridge forwards may only
  go on to one of its relays: its clients put a relay second on every path (they read the
  relays from the bridge's signed record), so the third hop sees the relay's address, never the
  bridge's. No wire change;
- `NodesFromRelays`: the `nodes` op (records for the bridge's clients building paths) answered
  from a relay's list, since the bridge itself tests no node but its relays;
- `BridgeReach`: stands in for the reachability service (no port mapping of the node port, no
  peer asked to connect back) and says in `info` what the bridge is doing.

The bridge's own record never names the bridge's address: it is relayed, lists its relays, and
gives its first relay's address and port (every record must name an address). The bridge does
not poll its relays, so no node can reach it through them either: its record stays known but
never live, it is in no swarm and in no `nodes` answer, and no client is ever handed it.
"""

import random

import trio

from firmware.link import LinkDown
from firmware.logs import short_id
from firmware.proto.errors import Busy, ProtocolError
from firmware.proto.records import MAX_RELAYS

__all__ = ["BridgeMode", "RelaysOnlyDialer", "RelaysOnlyPool", "NodesFromRelays", "BridgeReach"]

NODES_CACHE_S = 30.0  # a `nodes` answer from a relay is reused this long


class RelaysOnlyDialer:
    """`Dialer.open` for the relays' ids only; any other node is a ConnectionError, which every
    caller treats as "unreachable"."""

    def __init__(self, dialer, relay_ids: frozenset):
        self.dialer = dialer
        self.relay_ids = relay_ids
        self.refused = 0

    async def open(self, host: str, port: int, node_id: bytes, *, timeout: float | None = None):
        if node_id not in self.relay_ids:
            self.refused += 1
            raise ConnectionError(f"{short_id(node_id)}: a bridge connects to no node but its "
                                  "relays (it would give its address away)")
        return await self.dialer.open(host, port, node_id, timeout=timeout)


class RelaysOnlyPool:
    """The onion relay's next-hop pool on a bridge: an onion goes on only to one of the
    bridge's relays (over the link it keeps to it anyway); any other next hop - and anything
    but an onion - is refused without a connection. Bridge clients put one of the relays second
    on every path (firmware/bridge/entry.py), so the node after the bridge is always one that
    knows the bridge's address already."""

    def __init__(self, relay_pool, relays):
        """`relay_pool`: links to the relays (the node's peer pool); `relays`: [(host, port,
        node_id)]."""
        self.pool = relay_pool
        self.relay_ids = frozenset(r[2] for r in relays)
        self.counters = {"to_relays": 0, "refused_next_hops": 0}

    def open_count(self) -> int:
        return self.pool.open_count()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        """Nothing to hold: the links are the relay pool's."""
        task_status.started()

    async def request(self, node_id: bytes, address, op: str, args: dict, *,
                      timeout: float | None = None) -> dict:
        if node_id not in self.relay_ids or op != "onion":
            self.counters["refused_next_hops"] += 1
            raise LinkDown(f"{short_id(node_id)}: a bridge passes onions to its relays only (a "
                           "connection elsewhere would give its address away)")
        self.counters["to_relays"] += 1
        return await self.pool.request(node_id, address, op, args, timeout=timeout)


class NodesFromRelays:
    """The `nodes` op on a bridge: the live records a relay holds (signed: clients verify each
    one), asked of the relays in turn and kept for `NODES_CACHE_S`."""

    def __init__(self, relay_pool, relays, *, timeout: float = 10.0, rng=None):
        self.pool = relay_pool
        self.relays = list(relays)
        self.timeout = timeout
        self.rng = rng or random.SystemRandom()
        self._cached: tuple[float, dict] | None = None

    async def op_nodes(self, frame, conn, now_ms):
        now = trio.current_time()
        if self._cached is not None and now - self._cached[0] < NODES_CACHE_S:
            return self._cached[1]
        for host, port, relay_id in self.rng.sample(self.relays, len(self.relays)):
            try:
                ok = await self.pool.request(relay_id, (host, port), "nodes", {},
                                             timeout=self.timeout)
            except (LinkDown, ProtocolError):
                continue
            records = ok.get("records")
            if type(records) is list:
                answer = {"records": records}
                self._cached = (now, answer)
                return answer
        raise Busy("no relay of this node answers right now; try again in a minute")


class BridgeReach:
    """In place of the reachability service: nothing to map or test (the node port is on
    loopback), so it only reports. `info` goes to the owner's `homenode status` and to clients
    holding the line; it says nothing they do not know (no address, no secret)."""

    def __init__(self, roster, relays, dialer: RelaysOnlyDialer):
        self.roster = roster
        self.relays = list(relays)
        self.dialer = dialer

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()

    def info(self) -> dict:
        live = [r for r in self.relays if self.roster.state.is_live(r[2])]
        if live:
            advice = (f"this box is a bridge: unlisted, reached only by those holding its line, "
                      f"and linked to the network through {len(live)} of its "
                      f"{len(self.relays)} relays ([network] bootstrap)")
        else:
            advice = ("this box is a bridge, but none of its relays ([network] bootstrap) "
                      "answers yet: check that they are running and that this box reaches them")
        return {"reachability": "bridge" if live else "bridge_without_relays",
                "reachability_advice": advice,
                "relays": ",".join(short_id(r[2]) for r in live),
                "bridge_refused_dials": self.dialer.refused}


class BridgeMode:
    """What a node changes to be a bridge; `relays` are `[network] bootstrap` entries
    [(host, port, node_id)]: all of them (at most MAX_RELAYS) are its relays."""

    def __init__(self, relays):
        if not relays:
            raise ValueError("[bridge] enabled = true needs [network] bootstrap: the nodes a "
                             "bridge links to the network through (it connects to no other "
                             "node); add one or more HOST:PORT@NODEID entries")
        self.relays = list(relays)[:MAX_RELAYS]
        self.relay_ids = tuple(r[2] for r in self.relays)
        # what our record says (for Roster): relayed through the relays, at the first relay's
        # address - every record must name one, and ours must not be ours
        self.record = (self.relays[0][:2], self.relay_ids)

    def dialer(self, dialer) -> RelaysOnlyDialer:
        return RelaysOnlyDialer(dialer, frozenset(self.relay_ids))

    def forward_pool(self, relay_pool) -> RelaysOnlyPool:
        return RelaysOnlyPool(relay_pool, self.relays)

    def nodes_op(self, relay_pool) -> NodesFromRelays:
        return NodesFromRelays(relay_pool, self.relays)

    def reach(self, roster, dialer: RelaysOnlyDialer) -> BridgeReach:
        return BridgeReach(roster, self.relays, dialer)


# -- the bridge port in a node ---------------------------------------------------------------


class BridgeStartError(Exception):
    """The bridge cannot start (its port, its identity files); the message says the fix."""


def open_bridge_port(bcfg):
    """The bridge's listening socket (bound before the node's parts are built, like the node
    port). BridgeStartError naming the port and the fix when the OS refuses it."""
    from firmware.serve.listener import bind_tcp

    try:
        return bind_tcp(bcfg.host, bcfg.port)
    except PermissionError:
        raise BridgeStartError(
            f"bridge port {bcfg.host}:{bcfg.port}: permission denied: ports below 1024 need "
            "CAP_NET_BIND_SERVICE (the image's homenode.service grants it); elsewhere set "
            "[bridge] port to 1024 or above and forward port 443 to it on your router "
            "([bridge] public_port = 443)") from None
    except OSError as e:
        hint = " (something else, e.g. a web server, already uses it)" if e.errno == 98 else ""
        raise BridgeStartError(f"bridge port {bcfg.host}:{bcfg.port}: "
                               f"{e.strerror or e}{hint}") from None


def bridge_server(bcfg, data_dir: str, *, on_link, wrap_stream, log):
    """The node's BridgeServer and its identity (created in `data_dir` on first start)."""
    from firmware.bridge import identity
    from firmware.bridge.decoy import DecoySite
    from firmware.bridge.server import BridgeServer

    try:
        ident = identity.load_or_create(data_dir, bcfg.web_host_name)
    except identity.BridgeIdentityError as e:
        raise BridgeStartError(str(e)) from None
    server = BridgeServer(
        cert_path=ident.cert_path, key_path=ident.key_path, secret=ident.secret,
        on_link=on_link, site=DecoySite.stock(ident.installed_at), host=bcfg.host,
        port=bcfg.port, per_ip=bcfg.per_ip, max_connections=bcfg.max_connections,
        header_timeout=bcfg.header_timeout, keepalive_timeout=bcfg.keepalive_timeout,
        log=log, wrap_stream=wrap_stream)
    return server, ident
