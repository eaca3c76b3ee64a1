"""Network services of a node: the roster of node records, membership gossip, replication, the
onion relay, NAT and reachability, relayed mode.

Every part is a class taking its collaborators in its constructor; the node (firmware/node.py)
builds them once. Config sections ``[network]`` and ``[nat]``: firmware/net/settings.py.
"""
