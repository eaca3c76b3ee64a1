"""`[update]` in homenode.toml: how the box updates itself (the updater's settings, not the node's).

Why a device section: the updater runs as root beside the node, so these keys are consumed by
homenode-setup (image/device) and written to /etc/homenode/update.toml; the node never sees them.
They are declared with the node's config machinery so mistakes get the same one-line messages.
"""

import tomllib
from dataclasses import dataclass

from firmware.config import Check, ConfigError, FloatRange, Key, OneOf, Schema, Section

UPDATE_TOML = "/etc/homenode/update.toml"  # written by homenode-setup from homenode.toml


def _url_ok(v: str) -> bool:
    return v == "" or v.startswith(("https://", "http://", "file://"))


UPDATE = Section("update", "system updates (signed A/B bundles)", [
    Key("channel", "security", "which releases install by themselves: security (only when a "
        "security fix is out), all (every release), off (only bundles you apply yourself)",
        OneOf("security", "all", "off")),
    Key("index_url", "", "signed release index to check (empty: the address built into the "
        "image)", Check("an https://, http:// or file:// URL, or empty", _url_ok)),
    Key("check_interval_h", 24.0, "hours between release checks", FloatRange(1, 720, "hours")),
    Key("health_window_s", 180.0, "after an update, the node must run healthy this long "
        "before the new system is kept", FloatRange(5, 3600, "seconds")),
    Key("trial_timeout_s", 900.0, "if the node is not healthy for a whole window within this "
        "time after an update, the box goes back to the previous system",
        FloatRange(30, 7200, "seconds")),
    Key("reboot", True, "restart into a new system as soon as it is installed (false: at the "
        "next restart)"),
])  # fmt: skip


@dataclass(frozen=True)
class UpdateSettings:
    channel: str = "security"
    index_url: str = ""
    check_interval_h: float = 24.0
    health_window_s: float = 180.0
    trial_timeout_s: float = 900.0
    reboot: bool = True


def validate(table, where: str = "homenode.toml") -> tuple[dict, list[str]]:
    """The [update] table -> (values, problems), with the node config's messages."""
    values, problems = Schema([UPDATE]).validate({"update": table}, where)
    return values["update"], problems


def load(path: str = UPDATE_TOML) -> UpdateSettings:
    """Settings from the file homenode-setup wrote; defaults when there is none."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return UpdateSettings()
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: cannot read: {e}"]) from None
    values, problems = validate(data.get("update", {}), path)
    if problems:
        raise ConfigError(problems)
    return UpdateSettings(**values)
