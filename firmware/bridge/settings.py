"""Config section of the bridge part: ``[bridge]``. Declared apart from the server so the schema
(firmware/settings.py) lists it without importing any bridge code.

Also the one rule the bridge imposes on the rest of the node, as a pure function: with the
bridge on, the node port listens on loopback only (`node_listen_host`), because a node port open
to the internet answers with a homenode certificate and would give the bridge away.
"""

import ipaddress

from firmware.config import Check, FloatRange, IntRange, Key, NonEmpty, Section

__all__ = ["BRIDGE", "SECTIONS", "node_listen_host"]


def _public_host_ok(host):
    if not host:
        return True
    from firmware.bridge.line import BridgeLineError, _check_host

    try:
        _check_host(host.strip("[]"))
    except BridgeLineError:
        return False
    return True


BRIDGE = Section("bridge", "an unlisted entry for friends in censored networks (looks like a "
                 "plain web server to everyone else)", [
    Key("enabled", False, "serve as a bridge: never listed, reached only by those you give the "
        "line `homenode bridge line` prints; the node port then listens on 127.0.0.1 only"),
    Key("host", "0.0.0.0", "address the bridge port listens on",
        NonEmpty("a host name or IP address")),
    Key("port", 443, "TCP port of the bridge (443: where a web server is expected; binding it "
        "needs CAP_NET_BIND_SERVICE, which the image's unit grants)", IntRange(0, 65535)),
    Key("public_host", "", "address or DNS name friends reach the bridge at, put in the bridge "
        "line (e.g. your router's public address or a dynamic-DNS name)",
        Check("empty, a host name or an IP address", _public_host_ok)),
    Key("public_port", 0, "port friends reach the bridge at, in the line (0: the same as port; "
        "set it when your router forwards another outside port to this box)",
        IntRange(0, 65535)),
    Key("web_host_name", "raspberrypi", "name in the bridge's web certificate, as a freshly "
        "installed box would have it (changing it after the first start has no effect)",
        NonEmpty("a host name")),
    Key("per_ip", 8, "connections one address may hold on the bridge port",
        IntRange(1, 10_000)),
    Key("max_connections", 256, "connections on the bridge port at once",
        IntRange(1, 100_000)),
    Key("header_timeout", 60.0, "seconds for the TLS handshake and a request header (nginx's "
        "client_header_timeout)", FloatRange(0.5, 3600, "seconds")),
    Key("keepalive_timeout", 65.0, "seconds an idle web connection stays open (nginx's "
        "keepalive_timeout)", FloatRange(0.5, 3600, "seconds")),
])  # fmt: skip

SECTIONS = (BRIDGE,)


def node_listen_host(listen_host: str, bridge_enabled: bool) -> str:
    """Where the node port binds: as configured, except on a bridge, where anything but a
    loopback address becomes 127.0.0.1 (the image fixes listen_host to 0.0.0.0, so refusing
    the setting would make bridges impossible there)."""
    if not bridge_enabled:
        return listen_host
    try:
        if ipaddress.ip_address(listen_host).is_loopback:
            return listen_host
    except ValueError:
        if listen_host == "localhost":
            return listen_host
    return "127.0.0.1"
