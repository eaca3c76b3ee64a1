"""Network services of a node: membership, replication, onion relay, NAT and reachability.

``NETWORK`` is the ``[network]`` config section (listed in firmware.config's plugged sections);
``install_network(node)`` builds membership + replication for a ``firmware.node.Node`` and
plugs their ops, services and status fields in. Nothing is imported until it is called, so
``import firmware.net`` stays cheap.
"""

from firmware.config import Check, FloatRange, IntRange, Key, Section

__all__ = ["NETWORK", "install_network"]


def _bootstrap_ok(entries):
    from .membership import parse_bootstrap

    try:
        for e in entries:
            parse_bootstrap(e)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def _ids_ok(entries):
    try:
        return all(len(bytes.fromhex(e)) == 32 for e in entries)
    except (ValueError, TypeError):
        return False


NETWORK = Section("network", "how this node finds and joins the network", [
    Key("enabled", True, "join the network (false: a lone mailbox, no gossip or replication)"),
    Key("bootstrap", [], "nodes to ask for the member list at start, as HOST:PORT@NODEID "
        "(NODEID: 64 hex digits, shown by `homenode id` on that node)",
        Check('a list of "HOST:PORT@NODEID" strings', _bootstrap_ok)),
    Key("deny", [], "node ids (64 hex digits) this node refuses: no links, records or data "
        "from or to them", Check("a list of 64-hex-digit node ids", _ids_ok)),
    Key("advertise_host", "", "address other nodes should connect to (empty: the listen "
        "address; 127.0.0.1 if that is 0.0.0.0)"),
    Key("advertise_port", 0, "port other nodes should connect to (0: the listen port)",
        IntRange(0, 65535)),
    Key("k", 5, "copies of each mailbox: the swarm size", IntRange(1, 16)),
    Key("gossip_interval", 5.0, "seconds between membership exchanges",
        FloatRange(0.05, 3600, "seconds")),
    Key("gossip_fanout", 2, "peers asked per exchange round", IntRange(1, 16)),
    Key("test_interval", 10.0, "seconds between reachability tests of a live peer",
        FloatRange(0.05, 3600, "seconds")),
    Key("test_backoff_max", 120.0, "longest wait before re-testing an unreachable peer",
        FloatRange(0.05, 86_400, "seconds")),
    Key("test_timeout", 5.0, "seconds a reachability test may take",
        FloatRange(0.1, 120, "seconds")),
    Key("max_test_rate", 5.0, "reachability tests of live peers per second at most (a large "
        "network stretches the re-test interval instead)", FloatRange(0.1, 1000, "tests/s")),
    Key("fail_threshold", 2, "failed tests in a row before a live peer counts as down",
        IntRange(1, 10)),
    Key("record_lifetime", 3600.0, "seconds our signed record is valid (re-issued at half)",
        FloatRange(10, 86_400, "seconds")),
    Key("max_push", 256, "records taken from one peer per exchange", IntRange(1, 10_000)),
    Key("max_records", 20_000, "node records kept at most", IntRange(10, 1_000_000)),
    Key("anti_entropy_interval", 30.0, "seconds between anti-entropy rounds with swarm peers",
        FloatRange(0.1, 86_400, "seconds")),
    Key("settle_delay", 1.0, "seconds to wait after a membership change before hand-off",
        FloatRange(0, 600, "seconds")),
    Key("replicate_timeout", 5.0, "seconds to wait for a swarm member to confirm a copy",
        FloatRange(0.1, 120, "seconds")),
    Key("link_timeout", 5.0, "seconds to open a node-to-node link (TLS + hello)",
        FloatRange(0.1, 120, "seconds")),
])  # fmt: skip


def install_network(node):
    """Membership + replication for ``node``; returns the Network (None when disabled)."""
    if not node.cfg.network.enabled:
        return None
    from firmware import __version__

    from .membership import MembershipService
    from .peers import PeerAuth, PeerLinks, authenticated_connect
    from .replication import Replicator

    cfg = node.cfg.network
    net = Network()
    net.membership = MembershipService(
        node.identity, cfg, links=None, clock_ms=node.clock_ms, log=node.log,
        version=__version__, address=lambda: node.address,
    )  # fmt: skip
    m = net.membership
    net.links = PeerLinks(
        authenticated_connect(node.identity, m.own_record, on_record=m.on_record),
        timeout=cfg.link_timeout,
        # kept open between re-tests of a small network; in a big one (re-tests rate-capped,
        # minutes apart) links close between tests, so inbound links stay well under
        # [limits] max_connections (each node is tested ~max_test_rate times a second)
        idle_s=max(15.0, 2 * cfg.test_interval),
    )
    m.links = net.links
    net.auth = PeerAuth(node.identity, own_record=m.own_record, on_record=m.on_record,
                        denied=m.denied)
    net.replicator = Replicator(node.identity, node.store, m, net.links, cfg,
                                clock_ms=node.clock_ms, log=node.log)
    net.auth.install(node.handler)
    m.install(node.handler)
    net.replicator.install(node.handler)
    node.add_service("peer_links", net.links.run)
    node.add_service("membership", m.run)
    node.add_service("replication", net.replicator.run)
    node.handler.add_info(net.info)
    return net


class Network:
    """What install_network built: ``membership``, ``links``, ``auth``, ``replicator``."""

    membership = links = auth = replicator = None

    def info(self):
        return {**self.membership.info(), **self.replicator.info(),
                "peer_links": self.links.open_count()}  # fmt: skip
