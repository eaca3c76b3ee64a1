"""Network services of a node: membership, replication, onion relay, NAT and reachability.

``NETWORK`` is the ``[network]`` config section (listed in firmware.config's plugged sections);
``install_network(node)`` builds membership + replication for a ``firmware.node.Node`` and
plugs their ops, services and status fields in. Nothing is imported until it is called, so
``import firmware.net`` stays cheap.
"""

from firmware.net.settings import NETWORK

__all__ = ["NETWORK", "install_network"]


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
