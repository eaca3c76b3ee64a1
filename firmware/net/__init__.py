"""Network services of a node: membership, replication, onion relay, NAT and reachability."""
