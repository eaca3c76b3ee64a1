"""Sections of the boot-partition `homenode.toml` that configure the box, not the node:
``[device] [wifi] [ssh]``.

Why here and not in the image: `homenode config check` must know them (so the README's
boot-partition example passes on a PC), and the box's first boot (image/device/bootconfig.py,
run with the firmware's own Python) must check them with the same validator as the node's
sections, so one pass lists every problem. The node itself accepts and ignores them.

A new boot section (e.g. ``[update]``) is a `Section` here or in its part's settings module,
plus one line in `firmware.settings.BOOT_SECTIONS`.
"""

import re

from firmware.config import Check, Key, Rule, Section

__all__ = ["DEVICE", "WIFI", "SSH", "SECTIONS", "NODE_FIXED", "fixed_key_problems"]

# What the image fixes in the node config (the data partition, reachable from the LAN).
NODE_FIXED = {"data_dir": "/var/lib/homenode", "listen_host": "0.0.0.0"}

_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( [^\n\r]*)?$")


def _ssh_keys_ok(keys):
    return all(isinstance(k, str) and _SSH_KEY.match(k.strip()) for k in keys)


def _one_or_list(value):
    return [value] if isinstance(value, str) else value


DEVICE = Section("device", "the box itself (boot-partition file only)", [
    Key("hostname", "homenode", "name of the box on your network",
        Check("1-63 lower-case letters, digits and '-', not starting or ending with '-'",
              lambda v: bool(_HOSTNAME.match(v)))),
])  # fmt: skip

WIFI = Section("wifi", "Wi-Fi (boot-partition file only; leave out when the box is on a cable)", [
    Key("country", "", "your two-letter country code (Wi-Fi channels and power depend on it)",
        Check('your two-letter country code in capitals, e.g. "DE"',
              lambda v: v == "" or bool(_COUNTRY.match(v)))),
    Key("ssid", "", "network name",
        Check("the network name: 1 to 32 bytes of text in double quotes",
              lambda v: len(v.encode()) <= 32)),
    Key("passphrase", "", "WPA2 passphrase (stored on the box only as the derived key)",
        Check("a WPA2 passphrase: 8 to 63 characters in double quotes",
              lambda v: v == "" or 8 <= len(v) <= 63)),
], rules=[
    Rule(("country", "ssid", "passphrase"),
         lambda v: v["country"] != "" or (v["ssid"] == "" and v["passphrase"] == ""),
         'a country for Wi-Fi: give your two-letter country code, e.g. country = "DE"'),
    Rule(("ssid", "passphrase"), lambda v: (v["ssid"] == "") == (v["passphrase"] == ""),
         "ssid and passphrase together (a network name and its WPA2 passphrase of 8 to 63 "
         "characters)"),
])  # fmt: skip

SSH = Section("ssh", "remote login for maintainers (boot-partition file only; off without a key)", [
    Key("authorized_keys", [], "public keys allowed to log in as root (no password ever)",
        Check("a list of OpenSSH public key lines (copy each whole line from your "
              "~/.ssh/id_ed25519.pub)", _ssh_keys_ok), normalize=_one_or_list),
])  # fmt: skip

SECTIONS = (DEVICE, WIFI, SSH)


def fixed_key_problems(data: dict, where: str) -> list[str]:
    """On the box the image fixes [node] data_dir and listen_host: setting them is a mistake."""
    node = data.get("node")
    if not isinstance(node, dict):
        return []
    return [f"{where}: [node] {key} is fixed by the image ({NODE_FIXED[key]!r}); remove that line"
            for key in NODE_FIXED if key in node]
