"""The client library an app embeds: talk to one node, or to the network through onions.

    from firmware.client import connect, seal_for, open_sealed

    async with connect("127.0.0.1", 7070, node_id) as node:        # one node, pinned
        r = await node.store(recipient, seal_for(recipient, b"hi"), ttl_ms=3_600_000)
        msgs, more = await node.retrieve(my_signing_key)

    async with open_onion_client(nodes) as oc:                      # 3-hop onions
        await oc.store(recipient, seal_for(recipient, b"hi"))

It imports nothing of the server (no store, no SQLite, no listener): a test checks that in a
fresh interpreter.
"""

from firmware.clock import wall_ms
from firmware.link import LinkDown, LinkTimeout, PinMismatch

from .crypto import SEAL_OVERHEAD, open_sealed, seal_for
from .node_client import NodeClient, StorageCalls, connect
from .onion_client import (
    FinalHopFailed,
    NoPath,
    OnionClient,
    bootstrap,
    hops_from_records,
    open_onion_client,
    run_via_onion,
)

__all__ = ["connect", "NodeClient", "StorageCalls", "PinMismatch", "LinkDown", "LinkTimeout",
           "seal_for", "open_sealed", "SEAL_OVERHEAD", "wall_ms", "OnionClient",
           "open_onion_client", "NoPath", "FinalHopFailed", "bootstrap", "hops_from_records",
           "run_via_onion"]
