"""homenode.toml on the boot partition -> what the device should look like (pure, no I/O).

Why pure: the operator edits this file on a PC and never sees a terminal, so every mistake must
become a clear message (written back to the boot partition) while the device keeps its last good
settings. Keeping parsing and planning free of I/O lets the host test suite check every rule.

The checking is not done here: `firmware.settings.check_data` is the one validator that
`homenode config check` and `homenode run` use too, so one pass lists every problem, boot
sections ([device], [wifi], [ssh] in firmware/boot_settings.py, [update] in
firmware/update/settings.py) and node settings
together. This module turns a valid file into a Plan: the box's settings, and the node config
(every non-boot section, with [node] data_dir/listen_host fixed by the image).
"""

import hashlib
import tomllib
from dataclasses import dataclass, field

from firmware.boot_settings import NODE_FIXED
from firmware.settings import BOOT_SECTIONS, check_data

__all__ = ["Plan", "plan_from_text", "wpa_psk", "toml_dumps", "wpa_supplicant_conf",
           "NODE_FIXED", "BOOT_SECTION_NAMES"]

BOOT_SECTION_NAMES = tuple(s.name for s in BOOT_SECTIONS)


@dataclass
class Plan:
    """The settings to apply. `problems` non-empty means: apply nothing, report them."""

    hostname: str = "homenode"
    wifi_country: str | None = None
    wifi_ssid: str | None = None
    wifi_psk_hex: str | None = None  # derived key: the passphrase itself is not stored
    ssh_keys: list[str] = field(default_factory=list)
    update: dict = field(default_factory=dict)  # [update] as given (defaults filled by the updater)
    node_config: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ssh_enabled(self) -> bool:
        return bool(self.ssh_keys)


def wpa_psk(ssid: str, passphrase: str) -> str:
    """WPA2-PSK key as wpa_passphrase computes it (PBKDF2-HMAC-SHA1, 4096 rounds, 32 bytes)."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def plan_from_text(text: str, where: str = "homenode.toml") -> Plan:
    """The plan for a boot-partition file; `problems` lists every mistake in it at once."""
    plan = Plan(node_config={"node": dict(NODE_FIXED)})
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        plan.problems.append(f"{where}: not valid TOML: {e} (fix the line it names; a text "
                             "value needs double quotes)")
        return plan
    values, plan.problems = check_data(data, where, boot=True)
    if plan.problems:
        return plan
    plan.hostname = values["device"]["hostname"]
    wifi = values["wifi"]
    plan.wifi_country = wifi["country"] or None
    if wifi["ssid"]:
        plan.wifi_ssid = wifi["ssid"]
        plan.wifi_psk_hex = wpa_psk(wifi["ssid"], wifi["passphrase"])
    plan.ssh_keys = [k.strip() for k in values["ssh"]["authorized_keys"]]
    plan.update = dict(data.get("update", {}))
    node_config = {k: dict(v) for k, v in data.items() if k not in BOOT_SECTION_NAMES}
    node_config.setdefault("node", {}).update(NODE_FIXED)
    plan.node_config = node_config
    return plan


def toml_dumps(config: dict) -> str:
    """Minimal TOML writer for the node config (tables of scalars and lists of scalars)."""
    out = ["# Written by homenode-setup from the boot partition's homenode.toml. Do not edit:",
           "# edit homenode.toml on the card's boot partition instead.", ""]
    for section in sorted(config):
        table = config[section]
        out.append(f"[{section}]")
        for key in sorted(table):
            out.append(f"{key} = {_value(table[key])}")
        out.append("")
    return "\n".join(out)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise ValueError(f"cannot write {type(v).__name__} values to the node config")


def wpa_supplicant_conf(plan: Plan) -> str | None:
    """wpa_supplicant-wlan0.conf text, or None when no network is configured."""
    if not plan.wifi_country:
        return None
    lines = ["ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev", "update_config=0",
             f"country={plan.wifi_country}", ""]
    if plan.wifi_ssid:
        lines += ["network={", f"    ssid={plan.wifi_ssid.encode().hex()}",
                  f"    psk={plan.wifi_psk_hex}", "    key_mgmt=WPA-PSK", "}", ""]
    return "\n".join(lines)
