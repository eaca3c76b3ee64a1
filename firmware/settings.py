"""The node's whole config schema, assembled from the sections each part declares.

Why a module of its own: `firmware.config` is only the mechanism (keys, checks, validation) and
imports no part of the firmware; each part declares its sections in its own `settings` module
(importing only `firmware.config`); this module lists them. So there is no import cycle, and a
new part adds its sections with one line in `PART_SECTIONS`.
"""

import ipaddress

from firmware.boot_settings import SECTIONS as BOX_SECTIONS
from firmware.boot_settings import fixed_key_problems
from firmware.bridge.settings import SECTIONS as BRIDGE_SECTIONS
from firmware.config import EachParses, FloatRange, IntRange, Key, NonEmpty, OneOf, Schema, Section
from firmware.device.settings import SECTIONS as DEVICE_SECTIONS
from firmware.join.settings import SECTIONS as JOIN_SECTIONS
from firmware.net.settings import SECTIONS as NETWORK_SECTIONS
from firmware.update.settings import UPDATE
from firmware.web.settings import SECTIONS as WEB_SECTIONS

__all__ = ["NODE", "LIMITS", "STORE", "CORE_SECTIONS", "PART_SECTIONS", "BOOT_SECTIONS",
           "default_schema", "file_schema", "is_boot_file", "check_data"]


NODE = Section("node", "identity, data and listening address", [
    Key("data_dir", ".homenode", "directory for the identity key and the message store "
        "(relative paths are relative to the working directory)", NonEmpty("a directory path")),
    Key("listen_host", "127.0.0.1", "address the client listener binds "
        "(0.0.0.0 for all IPv4 interfaces)", NonEmpty("a host name or IP address")),
    Key("listen_port", 7070, "TCP port of the client listener (0 picks a free port)",
        IntRange(0, 65535)),
    Key("log_level", "info", "least important log level printed",
        OneOf("debug", "info", "warning", "error")),
    Key("shutdown_grace", 5.0, "seconds to let in-flight requests finish on SIGTERM",
        FloatRange(0, 120, "seconds")),
])

LIMITS = Section("limits", "protection against overload and abuse", [
    Key("max_connections", 256, "connections at once; when full, the least valuable one (still "
        "in its handshake, stalled or idle, from the network and address holding most) makes "
        "room",
        IntRange(1, 100_000)),
    Key("max_connections_per_ip", 32, "connections one remote address may hold (a node that "
        "proved its id counts against its id's share instead)", IntRange(1, 100_000)),
    Key("max_connections_per_subnet", 64, "connections one /24 (IPv4) or /48 (IPv6) may hold",
        IntRange(1, 100_000)),
    Key("new_connections_per_sec", 20.0, "new connections one remote address may open per "
        "second (bursts of twice that)", FloatRange(0.1, 100_000, "connections/s")),
    Key("new_connections_per_sec_per_subnet", 40.0, "new connections one /24 (IPv4) or /48 "
        "(IPv6) may open per second (bursts of twice that)",
        FloatRange(0.1, 100_000, "connections/s")),
    Key("trusted_addresses", ["127.0.0.1", "::1"], "addresses with no per-address share or rate "
        "(the box itself: the owner's tools are never locked out)",
        EachParses(ipaddress.ip_address, "a list of IP addresses")),
    Key("max_inflight_per_conn", 32, "requests in flight per connection before the node stops "
        "reading from it", IntRange(1, 10_000)),
    Key("handshake_timeout", 10.0, "seconds a client has to finish the TLS handshake",
        FloatRange(0.1, 600, "seconds")),
    Key("idle_timeout", 300.0, "seconds a connection may stay silent with nothing in flight",
        FloatRange(1, 86_400, "seconds")),
    Key("frame_timeout", 10.0, "seconds any request frame may take to arrive once its length "
        "header is in, plus its size at min_frame_rate", FloatRange(0.5, 3600, "seconds")),
    Key("min_frame_rate", 4096, "bytes per second a request frame must at least arrive at",
        IntRange(64, 10_000_000)),
    Key("stall_timeout", 60.0, "seconds an answer may wait for the peer to read it before the "
        "connection is dropped", FloatRange(1, 3600, "seconds")),
    Key("rate_burst", 600, "requests a client (remote IP) may send in a burst",
        IntRange(1, 10_000_000)),
    Key("rate_per_sec", 300.0, "sustained requests per second per client (remote IP)",
        FloatRange(0.1, 10_000_000, "requests/s")),
])

STORE = Section("store", "the message store (SQLite on the data partition)", [
    Key("quota_bytes", 1 << 30, "bytes of message data kept at most; stores beyond get 'full'",
        IntRange(1 << 20, 1 << 44)),
    Key("batch_rows", 64, "a grouped commit holds at most this many writes",
        IntRange(1, 10_000)),
    Key("batch_ms", 0, "0: commit a lone write at once and group the writes that arrive "
        "meanwhile; more: hold each commit open this many milliseconds for more writes (less SD "
        "wear under a light steady load, more latency)", IntRange(0, 10_000)),
    Key("sweep_interval", 30.0, "seconds between sweeps of expired messages",
        FloatRange(0.1, 86_400, "seconds")),
])

CORE_SECTIONS = (NODE, LIMITS, STORE)

# Sections declared by the other parts, one line each.
PART_SECTIONS = (NETWORK_SECTIONS + DEVICE_SECTIONS + BRIDGE_SECTIONS + WEB_SECTIONS
                 + JOIN_SECTIONS)


# Sections only the box's first boot applies (they configure the system, not the node), one
# line each; a homenode.toml may hold them anywhere: `config check` and `run` know them, the
# node ignores them.
BOOT_SECTIONS = BOX_SECTIONS + (UPDATE,)


def default_schema(extra_sections=()) -> Schema:
    """The node's schema: the core sections, the parts' sections, then `extra_sections`."""
    return Schema(CORE_SECTIONS + PART_SECTIONS + tuple(extra_sections))


def file_schema() -> Schema:
    """What a homenode.toml may hold: the node's sections and the box's boot sections."""
    return default_schema(BOOT_SECTIONS)


def is_boot_file(data: dict) -> bool:
    """A file with any boot section is the boot partition's (checked with the image's rules)."""
    return any(s.name in data for s in BOOT_SECTIONS)


def check_data(data: dict, where: str, *, boot: bool) -> tuple[dict, list[str]]:
    """THE check of a parsed homenode.toml, for `config check`, `run` and the box's first
    boot: every key, every rule between keys, and on the box the keys the image fixes.
    Returns (values, problems), every problem one line."""
    values, problems = file_schema().validate(data, where)
    if boot:
        problems += fixed_key_problems(data, where)
    return values, problems
