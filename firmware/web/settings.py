"""Config section of the status page: ``[web]``.

Declared apart from the server so the schema (firmware/settings.py) lists it without importing
any web code. The page never shares the public node port: it is a separate listener, by default
on loopback of a PC; the image sets ``host = "0.0.0.0"`` and ``port = 80`` for its LAN.
"""

import re

from firmware.config import Check, FloatRange, IntRange, Key, OneOf, Section

__all__ = ["SECTIONS", "WEB"]

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*$")


def _names_ok(v):
    return all(isinstance(x, str) and _NAME.match(x) for x in v)


WEB = Section("web", "the status page and /metrics on the home network", [
    Key("enabled", True, "serve the status page, /metrics and the diagnostics bundle"),
    Key("host", "127.0.0.1", "address the page listens on (0.0.0.0: every interface; the "
        "image serves its LAN)"),
    Key("port", 8080, "TCP port of the page (never the node's own port; 0 picks a free one)",
        IntRange(0, 65535)),
    Key("allowed_hosts", [], "extra names a browser may use for this box (its hostname, "
        "<hostname>.local, localhost and any IP address are always allowed; other Host headers "
        "are refused, which stops DNS-rebinding attacks)",
        Check("a list of host names", _names_ok)),
    Key("allow_from", "lan", "who may connect: lan (loopback, private and link-local "
        "addresses only) or any", OneOf("lan", "any")),
    Key("max_connections", 32, "page connections at once", IntRange(1, 1000)),
    Key("per_ip_connections", 8, "page connections at once from one address",
        IntRange(1, 1000)),
    Key("request_timeout", 10.0, "seconds a connection may take to send its request and "
        "receive the answer", FloatRange(0.5, 300, "seconds")),
    Key("history_save_interval", 600.0, "seconds between saves of the chart history to the "
        "data partition (sampled once a minute; at least 60, to spare the SD card)",
        FloatRange(60, 86_400, "seconds")),
])  # fmt: skip

SECTIONS = (WEB,)
