"""What the bridge's owner sees: the line to hand out, and its QR code. Local only.

The line carries the secret, so it never travels over the node protocol (anyone who reaches the
node port, or holds a line, may ask `info`): it is read here from the bridge's files in the data
directory, by the owner's own tools on the box - `homenode bridge line`, and the LAN status page
(firmware/web), which calls `bridge_for_owner` and shows `line` and `svg_qr()` to the owner.

Where the line points: `[bridge] public_host` / `public_port` (the address friends reach the
box at: the router's public address or a dynamic-DNS name, and the outside port the router
forwards), else what the router said when the node asked it to forward the bridge port
(bridge-public.json, firmware/bridge/portmap.py), else the port the running node's bridge
listens on (node.json) or `[bridge] port`.
"""

import json
import os
from dataclasses import dataclass

from firmware.bridge import identity
from firmware.bridge.line import BridgeLine, BridgeLineError, format_line
from firmware.bridge.portmap import read_public

__all__ = ["BridgeForOwner", "bridge_for_owner", "NoPublicAddress"]

ADDRESS_FILE = "node.json"


class NoPublicAddress(ValueError):
    """No address is known that friends could reach the bridge at."""


@dataclass(frozen=True)
class BridgeForOwner:
    line: str
    host: str
    port: int
    listening_port: int | None  # where the running node's bridge listens (None: not running)

    def __repr__(self):  # never the secret in a log or traceback
        return f"BridgeForOwner({self.host!r}, {self.port})"

    def terminal_qr(self) -> str:
        from firmware.qr import terminal_qr

        return terminal_qr(self.line)

    def svg_qr(self) -> str:
        from firmware.qr import svg_qr

        return svg_qr(self.line)


def _running_bridge_port(data_dir: str) -> int | None:
    try:
        with open(os.path.join(data_dir, ADDRESS_FILE)) as f:
            port = json.load(f).get("bridge_port")
    except (OSError, ValueError, AttributeError):
        return None
    return port if type(port) is int else None


def bridge_for_owner(data_dir: str, bridge_cfg, *, host: str | None = None,
                     port: int | None = None) -> BridgeForOwner:
    """The line for the bridge whose files are in `data_dir`. `host`/`port` override the config
    (e.g. a LAN address for a friend at home). Raises identity.BridgeIdentityError (no bridge
    yet, unreadable files) or NoPublicAddress, each with the fix in its message."""
    ident = identity.load_existing(data_dir)
    listening = _running_bridge_port(data_dir)
    mapped = read_public(data_dir) if listening else None  # the router's word, while it runs
    host = host or bridge_cfg.public_host or (mapped[0] if mapped else "")
    if not host:
        raise NoPublicAddress("no public address for the bridge line: the router did not "
                              "forward the bridge port when asked (UPnP/NAT-PMP), so set "
                              "[bridge] public_host in homenode.toml to the address or DNS name "
                              "friends reach this box at (your router's public address, or a "
                              "dynamic-DNS name) and forward the port by hand, or give --host")
    port = (port or bridge_cfg.public_port or (mapped[1] if mapped else 0) or listening
            or bridge_cfg.port)
    try:
        line = format_line(BridgeLine(host.strip("[]"), port, ident.pin, ident.secret))
    except BridgeLineError as e:
        raise NoPublicAddress(str(e)) from None
    return BridgeForOwner(line, host, port, listening)
