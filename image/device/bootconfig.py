"""homenode.toml on the boot partition -> what the device should look like (pure, no I/O).

Why pure: the operator edits this file on a PC and never sees a terminal, so every mistake must
become a clear message (written back to the boot partition) while the device keeps its last good
settings. Keeping parsing and planning free of I/O lets the host test suite check every rule.

Device-level sections are consumed here: [device] hostname, [wifi] country/ssid/passphrase,
[ssh] authorized_keys, [update] (the updater's settings, checked with its own schema in
firmware/update/settings.py). Every other section is node configuration and is passed through to the
node's config file (the node validates it); [node] data_dir/listen_host are fixed by the image.
"""

import hashlib
import re
import tomllib
from dataclasses import dataclass, field

DEVICE_SECTIONS = ("device", "wifi", "ssh", "update")
# What the image fixes in the node config (the data partition, reachable from the LAN).
NODE_FIXED = {"data_dir": "/var/lib/homenode", "listen_host": "0.0.0.0"}

_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( [^\n\r]*)?$")


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
    plan = Plan()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        plan.problems.append(f"{where}: not valid TOML: {e} (fix the line it names; a text "
                             "value needs double quotes)")
        return plan
    _device(data.get("device", {}), plan, where)
    _wifi(data.get("wifi", {}), plan, where)
    _ssh(data.get("ssh", {}), plan, where)
    _update(data.get("update", {}), plan, where)
    node_config = {k: v for k, v in data.items() if k not in DEVICE_SECTIONS}
    for name, table in node_config.items():
        if not isinstance(table, dict):
            plan.problems.append(f"{where}: {name} = ... must be inside a section such as "
                                 "[device]; top-level settings are not allowed")
    node = dict(node_config.get("node", {})) if isinstance(node_config.get("node"), dict) else {}
    for key in NODE_FIXED:
        if key in node:
            plan.problems.append(f"{where}: [node] {key} is fixed by the image "
                                 f"({NODE_FIXED[key]!r}); remove that line")
    node.update(NODE_FIXED)
    node_config["node"] = node
    plan.node_config = node_config
    return plan


def _table(value, name: str, plan: Plan, where: str) -> dict:
    if not isinstance(value, dict):
        plan.problems.append(f"{where}: {name} must be a section: write it as [{name}]")
        return {}
    return value


def _unknown(table: dict, allowed: tuple[str, ...], name: str, plan: Plan, where: str) -> None:
    for key in table:
        if key not in allowed:
            plan.problems.append(f"{where}: unknown key [{name}] {key} (keys of [{name}]: "
                                 + ", ".join(allowed) + ")")


def _device(value, plan: Plan, where: str) -> None:
    table = _table(value, "device", plan, where)
    _unknown(table, ("hostname",), "device", plan, where)
    if "hostname" in table:
        name = table["hostname"]
        if not isinstance(name, str) or not _HOSTNAME.match(name):
            plan.problems.append(f"{where}: [device] hostname = {name!r} is not allowed: use 1-63 "
                                 "lower-case letters, digits and '-', not starting or ending "
                                 "with '-'")
        else:
            plan.hostname = name


def _wifi(value, plan: Plan, where: str) -> None:
    table = _table(value, "wifi", plan, where)
    _unknown(table, ("country", "ssid", "passphrase"), "wifi", plan, where)
    if not table:
        return
    country, ssid, passphrase = (table.get(k) for k in ("country", "ssid", "passphrase"))
    if not isinstance(country, str) or not _COUNTRY.match(country):
        plan.problems.append(f"{where}: [wifi] country = {country!r}: give your two-letter "
                             "country code in capitals, e.g. \"DE\" (Wi-Fi channels and power "
                             "depend on it)")
        return
    plan.wifi_country = country
    if ssid is None:
        return
    if not isinstance(ssid, str) or not 1 <= len(ssid.encode()) <= 32:
        plan.problems.append(f"{where}: [wifi] ssid = {ssid!r}: the network name must be 1 to 32 "
                             "bytes of text in double quotes")
        return
    if not isinstance(passphrase, str) or not 8 <= len(passphrase) <= 63:
        plan.problems.append(f"{where}: [wifi] passphrase: a WPA2 passphrase is 8 to 63 "
                             "characters in double quotes")
        return
    plan.wifi_ssid = ssid
    plan.wifi_psk_hex = wpa_psk(ssid, passphrase)


def _ssh(value, plan: Plan, where: str) -> None:
    table = _table(value, "ssh", plan, where)
    _unknown(table, ("authorized_keys",), "ssh", plan, where)
    keys = table.get("authorized_keys", [])
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list):
        plan.problems.append(f"{where}: [ssh] authorized_keys must be a list of public key lines")
        return
    for key in keys:
        if not isinstance(key, str) or not _SSH_KEY.match(key.strip()):
            plan.problems.append(f"{where}: [ssh] authorized_keys entry {str(key)[:40]!r}... is "
                                 "not an OpenSSH public key line (copy the whole line from "
                                 "your ~/.ssh/id_ed25519.pub)")
            return
    plan.ssh_keys = [k.strip() for k in keys]


def _update(value, plan: Plan, where: str) -> None:
    from firmware.update.settings import validate

    table = _table(value, "update", plan, where)
    _, problems = validate(table, where)
    plan.problems.extend(problems)
    if not problems:
        plan.update = dict(table)


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
