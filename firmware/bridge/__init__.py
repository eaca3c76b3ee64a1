"""Bridges: unlisted entry points that look like a stock nginx HTTPS site to anyone without the
bridge secret, and carry a homenode link over a WebSocket for those who have it.

Server: `BridgeServer(cert_path=, key_path=, secret=, on_link=, site=DecoySite.stock(mtime))`,
a trio service. Client: `await open_bridge_stream(line, timeout=)` -> a trio Stream.
Line: `parse_line` / `format_line` / `BridgeLine`. Identity: `identity.load_or_create`.
In a node: `firmware.bridge.node_side` (how a bridge joins the network without giving its
address away); clients: `firmware.bridge.entry` (onions whose first hop is a bridge).
See docs/bridge.md for the wire details and why each choice was made.

Names are imported on first use, so reading the `[bridge]` settings (firmware/settings.py) does
not load trio and the TLS machinery into every `homenode config check`.
"""

import importlib

_WHERE = {
    "BridgeError": "client", "BridgePinMismatch": "client", "BridgeRefused": "client",
    "open_bridge_stream": "client", "DecoySite": "decoy", "BridgeLine": "line",
    "BridgeLineError": "line", "format_line": "line", "parse_line": "line",
    "BridgeServer": "server",
}  # fmt: skip

__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware.bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"firmware.bridge.{module}"), name)
    globals()[name] = value
    return value
