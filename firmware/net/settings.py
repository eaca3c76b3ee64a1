"""Config sections of the network part: ``[network]`` (membership, replication) and ``[nat]``
(reachability). Declared apart from the services so the schema (firmware/settings.py) lists them
without importing any network code."""

from firmware.config import EachParses, FloatRange, IntRange, Key, OneOf, Section
from firmware.identity import parse_node_id


def parse_bootstrap(entry):
    """``"host:port@<64 hex node id>"`` -> (host, port, node_id); ValueError saying what is wrong."""
    where, sep, hexid = entry.rpartition("@")
    if not sep:
        raise ValueError(f"{entry!r}: expected HOST:PORT@NODEID (the node id is 64 hex digits)")
    host, sep, port = where.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r}: expected HOST:PORT@NODEID with a port from 1 to 65535")
    try:
        node_id = parse_node_id(hexid)
    except ValueError:
        raise ValueError(f"{entry!r}: the node id after @ must be 64 hex digits") from None
    return host, int(port), node_id


NETWORK = Section("network", "how this node finds and joins the network", [
    Key("enabled", True, "join the network (false: a lone mailbox, no gossip or replication)"),
    Key("bootstrap", [], "nodes to ask for the member list at start, as HOST:PORT@NODEID "
        "(NODEID: 64 hex digits, shown by `homenode id` on that node)",
        EachParses(parse_bootstrap, 'a list of "HOST:PORT@NODEID" strings')),
    Key("deny", [], "node ids (64 hex digits) this node refuses: no links, records or data "
        "from or to them", EachParses(parse_node_id, "a list of 64-hex-digit node ids")),
    Key("advertise_host", "", "address other nodes should connect to (empty: the listen "
        "address; 127.0.0.1 if that is 0.0.0.0)"),
    Key("advertise_port", 0, "port other nodes should connect to (0: the listen port)",
        IntRange(0, 65535)),
    Key("k", 5, "copies of each mailbox: the swarm size", IntRange(1, 16)),
    # firmware/proto/pow.py DEFAULT_BITS (not imported: the schema loads no network code)
    Key("pow_bits", 24, "proof of work a node id needs, in bits (a network parameter: every "
        "node of one network must use the same; a new node grinds ~2^bits hashes once, about "
        "a minute on a Pi Zero 2 W at 24; only test networks lower it)", IntRange(0, 48)),
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

NAT = Section("nat", "reachability from the internet: port mapping and relayed mode", [
    Key("mode", "auto", "auto: try UPnP-IGD then NAT-PMP on the home router; off: never ask "
        "the router (a node listening on 127.0.0.1 never asks anyway)",
        OneOf("auto", "upnp", "natpmp", "off")),
    Key("lease", 3600, "seconds a port mapping lasts (renewed at half)", IntRange(120, 604_800)),
    Key("check_interval", 600.0, "seconds between reachability checks",
        FloatRange(1, 86_400, "seconds")),
    Key("test_peers", 3, "peers asked to connect back to us", IntRange(1, 10)),
    Key("relays", 2, "reachable peers a relayed node keeps links to", IntRange(1, 4)),
    Key("polls_per_relay", 4, "requests a relay may pass down at once", IntRange(1, 64)),
])  # fmt: skip

SECTIONS = (NETWORK, NAT)
