"""The roster: every node record this node holds, its own among them, and the swarms they make.

Why a part of its own: gossip, reachability tests, replication, the onion relay, relayed-mode
routing and the `nodes` op all read the same records and placement. Keeping them here, built
once when the node is built (the listener is bound by then, so our own address is known), means
nothing else owns them and nothing is `None` until some service happens to start.

- `GossipState` (firmware/proto/gossip.py, pure) decides what the table holds and who is live;
- `AdvertisedAddress` is where other nodes should connect to us: the operator's setting, else
  what reachability found (the router's side of a port mapping, or the address peers saw us
  at), else where we listen. Reachability changes it; the roster signs our record from it;
- `Placement` (rendezvous swarms) follows the live set; `changed()` wakes whoever waits for
  the next change (replication hands data over then).
"""

import hashlib
import random

import trio

from firmware.identity import parse_node_id
from firmware.logs import short_id as short
from firmware.proto.gossip import GossipState, NodeDown, NodeLive, OwnRecordSuperseded
from firmware.proto.placement import Placement
from firmware.proto.records import FLAG_REACHABLE, FLAG_RELAYED, address_allowed, make_record

__all__ = ["Roster", "AdvertisedAddress", "live_set_digest"]


def live_set_digest(ids) -> str:
    """Short fingerprint of a live set: equal on two nodes iff they see the same members."""
    return hashlib.blake2b(b"".join(sorted(ids)), digest_size=8).hexdigest()


_ANY = ("0.0.0.0", "::", "")


class AdvertisedAddress:
    """Where other nodes should connect to this one. Precedence: what reachability found while
    it holds (a port mapping), the operator's `[network] advertise_host/port`, the address peers
    saw us at (when listening on every interface), the bound address (127.0.0.1 for 0.0.0.0)."""

    def __init__(self, configured_host: str, configured_port: int, bound: tuple[str, int]):
        self.configured = (configured_host, configured_port)
        self.bound = bound
        self.mapped: tuple[str, int] | None = None
        self.seen_host: str | None = None

    @property
    def listens_everywhere(self) -> bool:
        return self.bound[0] in _ANY

    def current(self) -> tuple[str, int]:
        if self.mapped is not None:
            return self.mapped
        host = self.configured[0]
        if not host and self.listens_everywhere and self.seen_host:
            host = self.seen_host
        host = host or self.bound[0]
        if host in _ANY:
            host = "127.0.0.1"
        return host, self.configured[1] or self.bound[1]


class Roster:
    """Records, our own record, the live set and placement. Not a service: no task of its own."""

    def __init__(self, identity, cfg, advertised: AdvertisedAddress, *, version: str, clock_ms,
                 log, rng=None, hidden=None):
        """`cfg` is the [network] section. `hidden` (a bridge): ((host, port), relay ids) - our
        record is relayed through those relays and names that address (its first relay's),
        never our own (firmware/bridge/node_side.py)."""
        self.identity = identity
        self.hidden = hidden
        self.cfg = cfg
        self.advertised = advertised
        self.version = version
        self.clock_ms = clock_ms
        self.log = log
        self.rng = rng or random.Random()
        self.denied = frozenset(parse_node_id(e) for e in cfg.deny)
        self.placement = Placement([identity.node_id], k=cfg.k)
        self._changed = trio.Event()
        self.records_issued = 0
        now = clock_ms()
        self.state = GossipState(
            self._sign(now, now), rng=self.rng,
            test_interval_ms=int(cfg.test_interval * 1000),
            max_backoff_ms=int(cfg.test_backoff_max * 1000),
            fail_threshold=cfg.fail_threshold, max_push=cfg.max_push,
            max_test_rate=cfg.max_test_rate, max_records=cfg.max_records, denied=self.denied,
            address_ok=lambda host: address_allowed(host, self.state.own.addrs[0]
                                                    if self.state.own.addrs else ""),
        )  # fmt: skip

    # -- our record ----------------------------------------------------------------------------

    def own(self):
        return self.state.own

    def _sign(self, seq, now, flags=FLAG_REACHABLE, relays=()):
        host, port = self.advertised.current()
        if self.hidden is not None:
            (host, port), flags, relays = self.hidden[0], FLAG_RELAYED, self.hidden[1]
        lifetime = int(self.cfg.record_lifetime * 1000)
        return make_record(self.identity.signing_key, seq=seq, addrs=[host], port=port,
                           version=self.version, flags=flags, relays=relays, issued=now,
                           expires=now + lifetime)  # fmt: skip

    def reissue(self, *, flags=None, relays=None, min_seq=0):
        """Sign a new record (higher seq): the address, flags or relays changed, or it ages."""
        now = self.clock_ms()
        own = self.state.own
        rec = self._sign(max(now, own.seq + 1, min_seq + 1), now,
                         own.flags if flags is None else flags,
                         own.relays if relays is None else relays)  # fmt: skip
        self.state.set_own(rec)
        self.records_issued += 1
        return rec

    def reissue_if_changed(self, *, flags, relays) -> bool:
        """Re-sign only when flags, relays or the advertised address differ from our record."""
        own = self.state.own
        host, port = self.advertised.current()
        if own.flags == flags and list(own.relays) == list(relays) and own.address == (host,
                                                                                        port):
            return False
        self.reissue(flags=flags, relays=relays)
        return True

    # -- records from peers -------------------------------------------------------------------

    def merge(self, peer_id: bytes, wires, now_ms: int):
        """Records `peer_id` sent (gossip, hello); returns the merge result."""
        res = self.state.merge(peer_id, wires, now_ms)
        self.handle(res.events)
        return res

    def merge_from(self, peer_id: bytes, wire) -> None:
        """One record a peer sent with its hello (either direction)."""
        self.merge(peer_id, [wire], self.clock_ms())

    def handle(self, events) -> None:
        """Apply GossipState events: log them, follow the live set, answer a lost seq."""
        changed = False
        for ev in events:
            if isinstance(ev, NodeLive):
                self.log.info("peer_live", peer=short(ev.node_id))
                changed = True
            elif isinstance(ev, NodeDown):
                self.log.info("peer_down", peer=short(ev.node_id))
                changed = True
            elif isinstance(ev, OwnRecordSuperseded):
                self.log.warning("own_record_superseded", seq=ev.seq)
                self.reissue(min_seq=ev.seq)
        if changed and self.placement.update(self.state.live_ids()):
            self._changed.set()
            self._changed = trio.Event()

    async def changed(self) -> None:
        """Return at the next change of the live set (and so of placement)."""
        await self._changed.wait()

    # -- reads ----------------------------------------------------------------------------------

    def get(self, node_id: bytes):
        return self.state.get(node_id)

    def address_of(self, node_id: bytes):
        rec = self.state.get(node_id)
        return rec.address if rec is not None else None

    def live_count(self) -> int:
        """Live peers, this node not counted."""
        return len(self.state.live_ids()) - 1

    def swarm(self, recipient: bytes):
        return self.placement.swarm(recipient)

    def info(self) -> dict:
        st = self.state
        return {
            "peers_known": len(st),
            "peers_live": self.live_count(),
            "live_set": live_set_digest(st.live_ids()),
            "swarm_k": self.placement.k,
            "membership_epoch": self.placement.epoch,
            "records_refused": sum(st.refused.values()),
            "record_flags": ",".join(st.own.flag_names),
        }
