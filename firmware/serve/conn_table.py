"""Who may hold the node's connection slots: per-address shares, and whom to shed when full.

Pure (addresses, stages and times in, verdicts out). Why: one address once held every slot with
256 trickling connections and locked everybody else out. Now

- each remote IP may hold `per_ip` connections, each /24 (IPv4) or /48 (IPv6) `per_subnet`;
  an IP may open at most `accept_rate` new ones per second (bursts of `accept_burst`), a
  network `subnet_rate` (bursts of `subnet_burst`): each new connection is a TLS handshake,
  the most CPU a stranger can make the node spend, and one spread over many addresses of a few
  networks must not buy more of it than a few addresses would;
- at most `max_handshakes` connections may be in the TLS handshake at once (a handshake costs
  us memory and crypto, the peer nothing);
- `trusted` addresses (by default the box itself: 127.0.0.1, ::1) have no rate or share: the
  owner's own `homenode status` must never be locked out by a stranger's flood;
- a connection that proved it is a node (`hello`) counts against its node id's share
  (`per_node`) instead of its address's, so several boxes behind one home NAT keep their links;
- when a share or the whole table is full, the newcomer does not simply bounce: the least
  valuable connection goes - one still in its handshake, then one that never completed a
  request or has stalled, then an idle one, preferring the network (/24, /48) and then the
  address that holds the most - as long as it is worth less than an active client or a node
  link, which are never shed for a newcomer;
- a newcomer sheds only a connection of a network that holds more than its own: a flood
  spread thinly over many addresses of a few networks cannot push out the handshake of a
  client from elsewhere (its network holds one or two), and cannot churn a quieter network's
  connections by re-opening its own.
"""

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from hal.core.bucket import TokenBucket

__all__ = ["TableLimits", "ConnTable", "Admit", "subnet_of",
           "HANDSHAKING", "FRESH", "IDLE_CLIENT", "ACTIVE", "NODE"]

# Stages, in the order of what a connection is worth to the node's users.
HANDSHAKING, FRESH, IDLE_CLIENT, ACTIVE, NODE = range(5)
SHEDDABLE = IDLE_CLIENT  # worth at most this: may be shed for a newcomer
MAX_TRACKED = 10_000  # accept-rate buckets kept (least recently seen dropped)


def subnet_of(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to, as text."""
    if ":" not in ip and ip.count(".") == 3:  # dotted IPv4 as accept() gives it: the fast way
        return ip[:ip.rindex(".")] + ".0/24"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


@dataclass(frozen=True)
class TableLimits:
    max_total: int = 256
    per_ip: int = 32
    per_subnet: int = 64
    per_node: int = 8
    max_handshakes: int = 64
    accept_rate: float = 20.0
    accept_burst: int = 40
    subnet_rate: float = 40.0
    subnet_burst: int = 80
    trusted: frozenset = frozenset(("127.0.0.1", "::1", "::ffff:127.0.0.1"))


@dataclass(frozen=True)
class Admit:
    ok: bool
    victim: object = None  # key of a connection to close to make room
    reason: str = ""


class _Entry:
    __slots__ = ("ip", "subnet", "stage", "node", "stalled", "since")

    def __init__(self, ip, subnet, now):
        self.ip, self.subnet = ip, subnet
        self.stage = HANDSHAKING
        self.node = None
        self.stalled = False
        self.since = now


class ConnTable:
    def __init__(self, limits: TableLimits):
        self.limits = limits
        self._conns: dict[object, _Entry] = {}
        self._by_subnet: dict[str | None, dict[object, _Entry]] = {}  # (None: trusted)
        self._per_ip: dict[str, int] = {}
        self._per_subnet: dict[str, int] = {}
        self._per_node: dict[bytes, int] = {}
        self._handshaking = 0
        self._rate: OrderedDict[str, TokenBucket] = OrderedDict()
        self.counters = {"refused_rate": 0, "refused_share": 0, "refused_full": 0, "shed": 0}

    def __len__(self):
        return len(self._conns)

    def holders(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    # -- admission -------------------------------------------------------------------------

    def admit(self, key, ip: str, now: float) -> Admit:
        """May a new connection from `ip` have a slot? If so it is registered under `key`
        (stage HANDSHAKING) and `victim`, when set, must be closed now."""
        lim = self.limits
        if ip in lim.trusted:
            return self._admit_trusted(key, ip, now)
        if not self._take_rate(ip, now, lim.accept_rate, lim.accept_burst):
            self.counters["refused_rate"] += 1
            return Admit(False, reason=f"more than {lim.accept_rate:g} new connections/s")
        subnet = subnet_of(ip)
        if not self._take_rate(subnet, now, lim.subnet_rate, lim.subnet_burst):
            self.counters["refused_rate"] += 1
            return Admit(False, reason=f"more than {lim.subnet_rate:g} new connections/s "
                                       "from this network")
        victim = None
        # Over a share, the address's own connections make room only once they got somewhere
        # (TLS done, then stalled or idle): re-opening handshakes just bounces off.
        if self._per_ip.get(ip, 0) >= lim.per_ip:
            victim = self._victim(subnet, ip=ip, handshakes=False)
            if victim is None:
                self.counters["refused_share"] += 1
                return Admit(False, reason=f"this address holds {lim.per_ip} connections")
        elif self._per_subnet.get(subnet, 0) >= lim.per_subnet:
            victim = self._victim(subnet, handshakes=False)
            if victim is None:
                self.counters["refused_share"] += 1
                return Admit(False, reason=f"this network holds {lim.per_subnet} connections")
        elif self._handshaking >= lim.max_handshakes:
            victim = self._victim(floor=self._per_subnet.get(subnet, 0), only_handshakes=True)
            if victim is None:
                self.counters["refused_full"] += 1
                return Admit(False, reason=f"{lim.max_handshakes} TLS handshakes under way")
        elif len(self._conns) >= lim.max_total:
            victim = self._victim(floor=self._per_subnet.get(subnet, 0))
            if victim is None:
                self.counters["refused_full"] += 1
                return Admit(False, reason="every connection slot is in use")
        if victim is not None:
            self.counters["shed"] += 1
            self.remove(victim)
        self._add(key, _Entry(ip, subnet, now))
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._per_subnet[subnet] = self._per_subnet.get(subnet, 0) + 1
        return Admit(True, victim=victim)

    def _admit_trusted(self, key, ip, now) -> Admit:
        victim = None
        if len(self._conns) >= self.limits.max_total:
            victim = self._victim()
            if victim is None:
                self.counters["refused_full"] += 1
                return Admit(False, reason="every connection slot is in use")
            self.counters["shed"] += 1
            self.remove(victim)
        self._add(key, _Entry(ip, None, now))
        return Admit(True, victim=victim)

    def _add(self, key, entry: _Entry) -> None:
        self._conns[key] = entry
        group = self._by_subnet.get(entry.subnet)
        if group is None:
            group = self._by_subnet[entry.subnet] = {}
        group[key] = entry
        self._handshaking += 1

    def _take_rate(self, source, now, rate, burst) -> bool:
        """One new connection from `source` (an address, or a network as "a.b.c.0/24")."""
        now_ms = int(now * 1000)
        bucket = self._rate.get(source)
        if bucket is None:
            bucket = self._rate[source] = TokenBucket(rate, burst, now_ms)
            if len(self._rate) > MAX_TRACKED:
                self._rate.popitem(last=False)
        else:
            self._rate.move_to_end(source)
        return bucket.take(1, now_ms)

    def _victim(self, subnet=None, *, ip=None, handshakes=True, only_handshakes=False,
                floor=-1):
        """The least valuable sheddable connection, or None: of `subnet` (and `ip`) when given,
        else of any network holding more than `floor` connections; mid-handshake ones only
        with `handshakes`, nothing else with `only_handshakes`. Least valuable: the lowest
        stage (a stalled one counts as FRESH), then the busiest network, the busiest address,
        the oldest."""
        per_subnet, per_ip = self._per_subnet, self._per_ip
        if subnet is not None:
            groups = [(subnet, self._by_subnet.get(subnet, {}))]
        elif per_subnet and max(per_subnet.values()) > floor:
            groups = [(net, group) for net, group in self._by_subnet.items()
                      if per_subnet.get(net, 0) > floor]
        elif floor < 0:  # (only trusted connections: none of them holds a network share)
            groups = [(None, self._by_subnet.get(None, {}))]
        else:
            return None
        best, best_rank = None, None
        for net, group in groups:
            network = -per_subnet.get(net, 0)
            for key, e in group.items():
                stage = e.stage
                if stage == HANDSHAKING:
                    if not handshakes:
                        continue
                    worth = HANDSHAKING
                elif only_handshakes or stage > SHEDDABLE and not e.stalled or stage == NODE:
                    continue
                else:
                    worth = FRESH if e.stalled and stage > FRESH else stage
                if ip is not None and (e.ip != ip or e.node is not None):
                    continue
                rank = (worth, network, -per_ip.get(e.ip, 0), e.since)
                if best_rank is None or rank < best_rank:
                    best, best_rank = key, rank
        return best

    # -- what a connection became ----------------------------------------------------------

    def set_stage(self, key, stage: int) -> None:
        e = self._conns.get(key)
        if e is None or e.stage == stage or e.stage == NODE:
            return
        if e.stage == HANDSHAKING:
            self._handshaking -= 1
        e.stage = stage

    def set_stalled(self, key, stalled: bool) -> None:
        e = self._conns.get(key)
        if e is not None:
            e.stalled = stalled

    def proved_node(self, key, node_id: bytes) -> bool:
        """The peer on `key` proved it is node `node_id`: it now counts against that id's share
        instead of its address's. False if that node already holds `per_node` links."""
        e = self._conns.get(key)
        if e is None or e.node is not None:
            return e is not None
        if self._per_node.get(node_id, 0) >= self.limits.per_node:
            return False
        if e.subnet is not None:
            self._dec(self._per_ip, e.ip)
            self._dec(self._per_subnet, e.subnet)
        self._per_node[node_id] = self._per_node.get(node_id, 0) + 1
        if e.stage == HANDSHAKING:
            self._handshaking -= 1
        e.node, e.stage = node_id, NODE
        return True

    def remove(self, key) -> None:
        e = self._conns.pop(key, None)
        if e is None:
            return
        group = self._by_subnet[e.subnet]
        del group[key]
        if not group:
            del self._by_subnet[e.subnet]
        if e.node is not None:
            self._dec(self._per_node, e.node)
        elif e.subnet is not None:  # (trusted addresses are not counted per address)
            self._dec(self._per_ip, e.ip)
            self._dec(self._per_subnet, e.subnet)
        if e.stage == HANDSHAKING:
            self._handshaking -= 1

    @staticmethod
    def _dec(table, k):
        n = table.get(k, 0) - 1
        if n > 0:
            table[k] = n
        else:
            table.pop(k, None)

    def info(self) -> dict:
        return {"connections": len(self._conns), "handshaking": self._handshaking,
                "addresses": len(self._per_ip), "node_links_in": sum(self._per_node.values()),
                **self.counters}
