"""The roster: every node record this node holds, its own among them, and the swarms they make.

Why a part of its own: gossip, reachability tests, replication, the onion relay, relayed-mode
routing and the `nodes` op all read the same records and placement. Keeping them here, built
once when the node is built (the listener is bound by then, so our own address is known), means
nothing else owns them and nothing is `None` until some service happens to start.

- `GossipState` (firmware/proto/gossip.py, pure) decides what the table holds and who is live;
- `AdvertisedAddress` is where other nodes should connect to us: the operator's setting, else
  what reachability found (the router's side of a port mapping, or the address peers saw us
  at), else where we listen. Reachability changes it; the roster signs our record from it;
- `Placement` (network-ranked swarms, firmware/proto/placement.py) follows the live records:
  each live node counts in the networks of its record's address and of its relays' addresses,
  so every node computes the same swarms from the same signed records; `changed()` wakes
  whoever waits for the next change (replication hands data over then);
- our record carries the id's proof of work (`pow`, made once: firmware/net/id_work.py) and
  `[network] pow_bits` is what gossip demands of everyone else's.
"""

import hashlib
import random

import trio

from firmware.identity import parse_node_id
from firmware.logs import short_id as short
from firmware.proto.gossip import GossipState, NodeDown, NodeLive, OwnRecordSuperseded
from firmware.proto.placement import LEVELS, Placement, members_from_records
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

    def for_record(self, flags: int) -> tuple[str, int]:
        """The address our record names. A relayed node names where its relays see it connect
        from (peers' `seen_ip`): placement groups it by that network, and a relay attaches it
        only from there (docs/protocol.md, "Node records")."""
        host, port = self.current()
        if flags & FLAG_RELAYED and self.seen_host:
            host = self.seen_host
        return host, port


# what each placement relaxation level means, for status
PLACEMENT_RULES = ("one node per /16", "two nodes per /16, one per /24", "one node per /24",
                   "plain ranking: too few networks to spread copies")
_PROBES = tuple(hashlib.blake2b(b"homenode/placement-probe" + bytes([i]), digest_size=32).digest()
                for i in range(8))  # fixed mailboxes whose swarms show the level in use


class Roster:
    """Records, our own record, the live set and placement. Not a service: no task of its own."""

    def __init__(self, identity, cfg, advertised: AdvertisedAddress, *, version: str, clock_ms,
                 log, rng=None, hidden=None, pow: bytes = b""):
        """`cfg` is the [network] section. `hidden` (a bridge): ((host, port), relay ids) - our
        record is relayed through those relays and names that address (its first relay's),
        never our own (firmware/bridge/node_side.py). `pow`: the id's proof of work (b"" until
        it is made: then `set_pow`)."""
        self.identity = identity
        self.hidden = hidden
        self.cfg = cfg
        self.advertised = advertised
        self.version = version
        self.clock_ms = clock_ms
        self.log = log
        self.rng = rng or random.Random()
        self.denied = frozenset(parse_node_id(e) for e in cfg.deny)
        self.pow = pow
        self.placement = Placement([identity.node_id], k=cfg.k)
        self._changed = trio.Event()
        self._level = (None, None)  # (placement epoch, level) for status
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
            pow_bits=cfg.pow_bits,
        )  # fmt: skip
        self._follow()

    # -- our record ----------------------------------------------------------------------------

    def own(self):
        return self.state.own

    def _sign(self, seq, now, flags=FLAG_REACHABLE, relays=()):
        host, port = self.advertised.for_record(flags)
        if self.hidden is not None:
            (host, port), flags, relays = self.hidden[0], FLAG_RELAYED, self.hidden[1]
        lifetime = int(self.cfg.record_lifetime * 1000)
        return make_record(self.identity.signing_key, seq=seq, addrs=[host], port=port,
                           version=self.version, flags=flags, relays=relays, issued=now,
                           expires=now + lifetime, pow=self.pow)  # fmt: skip

    def set_pow(self, nonce: bytes) -> None:
        """The id's proof of work is made: sign our record with it from now on."""
        self.pow = nonce
        self.reissue()

    def reissue(self, *, flags=None, relays=None, min_seq=0):
        """Sign a new record (higher seq): the address, flags or relays changed, or it ages."""
        now = self.clock_ms()
        own = self.state.own
        rec = self._sign(max(now, own.seq + 1, min_seq + 1), now,
                         own.flags if flags is None else flags,
                         own.relays if relays is None else relays)  # fmt: skip
        self.state.set_own(rec)
        self.records_issued += 1
        self._follow()  # our own address or relays count in placement too
        return rec

    def reissue_if_changed(self, *, flags, relays) -> bool:
        """Re-sign only when flags, relays or the advertised address differ from our record."""
        own = self.state.own
        host, port = self.advertised.for_record(flags)
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
        if changed:
            self._follow()

    def _follow(self) -> None:
        """Placement over the live records (addresses and relays, not bare ids)."""
        if self.placement.update(members_from_records(self.state.live_records())):
            self._changed.set()
            self._changed = trio.Event()

    def charge(self, peer_id: bytes, reason: str) -> None:
        """A peer sent something no honest node sends (e.g. a private copy without its owner's
        proof): it loses score, and below the ban score it is ignored like a forger."""
        self.state.charge(peer_id, reason)

    def banned(self, peer_id: bytes) -> bool:
        return self.state.banned(peer_id)

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

    def placement_level(self) -> int:
        """The relaxation level placement needs now (the worst over a few fixed mailboxes):
        0 when the live nodes span enough networks, 3 on a one-network test cluster."""
        epoch = self.placement.epoch
        if self._level[0] != epoch:
            level = max(self.placement.swarm_level(r)[1] for r in _PROBES)
            self._level = (epoch, level)
        return self._level[1]

    def info(self) -> dict:
        st = self.state
        level = self.placement_level()
        return {
            "placement_level": level,
            "placement_rule": PLACEMENT_RULES[min(level, len(LEVELS) - 1)],
            "placement_relaxed_picks": self.placement.relaxed,
            "peers_known": len(st),
            "peers_live": self.live_count(),
            "live_set": live_set_digest(st.live_ids()),
            "swarm_k": self.placement.k,
            "membership_epoch": self.placement.epoch,
            "records_refused": sum(st.refused.values()),
            "record_flags": ",".join(st.own.flag_names),
        }
