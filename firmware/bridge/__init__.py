"""Bridges: unlisted entry points that look like a stock nginx HTTPS site to anyone without the
bridge secret, and carry a homenode link over a WebSocket for those who have it.

Server: `BridgeServer(cert_path=, key_path=, secret=, on_link=, site=DecoySite.stock(mtime))`,
a trio service. Client: `await open_bridge_stream(line, timeout=)` -> a trio Stream.
Line: `parse_line` / `format_line` / `BridgeLine`. Identity: `webcert.write_web_identity`.
See docs/bridge.md for the wire details and why each choice was made.
"""

from firmware.bridge.client import BridgeError, BridgePinMismatch, BridgeRefused, open_bridge_stream
from firmware.bridge.decoy import DecoySite
from firmware.bridge.line import BridgeLine, BridgeLineError, format_line, parse_line
from firmware.bridge.server import BridgeServer

__all__ = ["BridgeError", "BridgePinMismatch", "BridgeRefused", "open_bridge_stream",
           "DecoySite", "BridgeLine", "BridgeLineError", "format_line", "parse_line",
           "BridgeServer"]
