"""Config section of joining without a terminal: ``[join]`` (signed seed list, LAN discovery).

Declared apart from the services so the schema (firmware/settings.py) lists it without importing
them. ``[network] bootstrap`` stays the operator's explicit list; these are used when it is empty.
"""

from firmware.config import FloatRange, Key, Section

__all__ = ["JOIN", "SECTIONS"]

JOIN = Section("join", "finding the network with no bootstrap configured", [
    Key("seed_file", "/usr/share/homenode/seeds.json", "signed seed list shipped in the image "
        "(a newer one in the data dir, seeds.json, from an update wins); empty: none"),
    Key("release_key_file", "/usr/share/homenode/release-key.pub", "the release public key "
        "(64 hex digits) that must have signed the seed list"),
    Key("lan_discovery", True, "find other boxes on this LAN by DNS-SD (_homenode._tcp via "
        "avahi); off by itself where avahi is not installed"),
    Key("lan_browse_interval", 60.0, "seconds between LAN browses",
        FloatRange(5, 86_400, "seconds")),
])  # fmt: skip

SECTIONS = (JOIN,)
