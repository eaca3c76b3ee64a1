"""Config sections of the device part: ``[hal] [thermal] [bandwidth] [storage]``.

Declared apart from the services so the config schema (firmware/settings.py) can list them
without importing hardware code; the message quota itself is ``[store] quota_bytes``.
"""

import ipaddress

from firmware.config import Check, EachParses, FloatRange, IntRange, Key, OneOf, Rule, Section
from hal.core.civil import parse_window

__all__ = ["BANDWIDTH", "HAL", "SECTIONS", "STORAGE", "THERMAL"]


def _pins_ok(v):
    return v == [] or (len(v) == 3 and all(type(x) is int and 0 <= x <= 27 for x in v)
                       and len(set(v)) == 3)


def _pins_apart(v):
    used = [p for p in (v["led_pin"], v["button_pin"], *v["rgb_pins"]) if p >= 0]
    return len(used) == len(set(used))


HAL = Section("hal", "device hardware: LEDs, button, sensors", [
    Key("backend", "auto", "hardware backend: auto (a Raspberry Pi if the device tree says so, "
        "else simulated), pi, or sim; the HOMENODE_HAL_BACKEND environment variable overrides",
        OneOf("auto", "pi", "sim")),
    Key("sysfs_root", "/", "directory holding sys/ and proc/ (tests use a fake tree)"),
    Key("onboard_leds", True, "drive the Pi's own ACT (green) and PWR (red) LEDs"),
    Key("led_pin", -1, "BCM GPIO number of a single status LED (-1: none)", IntRange(-1, 27)),
    Key("rgb_pins", [], "BCM GPIO numbers of an RGB LED as [red, green, blue] ([]: none)",
        Check("[] or a list of 3 different GPIO numbers from 0 to 27", _pins_ok)),
    Key("led_pwm", True, "dim LEDs with PWM (needed for mixed RGB colours)"),
    Key("led_active_high", True, "false for a common-anode RGB LED (LED lit when the pin is low)"),
    Key("button_pin", -1, "BCM GPIO number of the push button, wired to ground (-1: none)",
        IntRange(-1, 27)),
    Key("button_pull_up", True, "use the internal pull-up (button between the pin and ground)"),
    Key("shutdown_hold_s", 3.0, "hold the button this long, then release: safe shutdown",
        FloatRange(0.5, 30, "seconds")),
    Key("reset_hold_s", 10.0, "hold this long, release, press again: factory reset",
        FloatRange(1, 60, "seconds")),
    Key("reset_confirm_s", 15.0, "seconds allowed for the confirming press",
        FloatRange(1, 120, "seconds")),
    Key("identify_s", 5.0, "seconds the identify blink lasts after a short press",
        FloatRange(0.5, 600, "seconds")),
    Key("shutdown_command", "auto", "run after a safe-shutdown hold, once data is flushed "
        "(auto: on a Pi the node exits with status 76 and its systemd unit powers off; in sim only stop; empty: only stop the node)"),
    Key("vcgencmd", "vcgencmd", "command for the firmware throttle flags when the sysfs file is "
        "missing (empty: do not run it)"),
    Key("poll_interval", 5.0, "seconds between sensor readings", FloatRange(0.01, 300, "seconds")),
], rules=[
    Rule(("shutdown_hold_s", "reset_hold_s"), lambda v: v["shutdown_hold_s"] < v["reset_hold_s"],
         "shutdown_hold_s < reset_hold_s (a hold for a reset passes the shutdown hold first)"),
    Rule(("led_pin", "button_pin", "rgb_pins"), _pins_apart,
         "a different GPIO for the LED, the button and each RGB colour"),
])  # fmt: skip

THERMAL = Section("thermal", "CPU temperature tiers (act before the firmware throttles)", [
    Key("warm_c", 65.0, "at or above: pause background work (sweeps, anti-entropy)",
        FloatRange(30, 100, "degC")),
    Key("hot_c", 75.0, "at or above: refuse new relays and stores with 'busy', cut bandwidth",
        FloatRange(30, 110, "degC")),
    Key("critical_c", 80.0, "at or above: minimum service only", FloatRange(30, 120, "degC")),
    Key("hysteresis_c", 3.0, "a tier is left only this far below its threshold",
        FloatRange(0, 20, "degC")),
    Key("smoothing_samples", 3, "median of this many readings (rejects one-off glitches)",
        IntRange(1, 60)),
    Key("hot_bandwidth_percent", 25, "bandwidth allowed while hot, in % of normal",
        IntRange(1, 100)),
    Key("critical_bandwidth_percent", 5, "bandwidth allowed while critical, in % of normal",
        IntRange(1, 100)),
], rules=[
    Rule(("warm_c", "hot_c", "critical_c"),
         lambda v: v["warm_c"] < v["hot_c"] < v["critical_c"], "warm_c < hot_c < critical_c"),
])  # fmt: skip

BANDWIDTH = Section("bandwidth", "link speed limits, monthly cap and quiet hours", [
    Key("up_mbit", 0.0, "upload limit in Mbit/s (0: unlimited)", FloatRange(0, 100_000, "Mbit/s")),
    Key("down_mbit", 0.0, "download limit in Mbit/s (0: unlimited)",
        FloatRange(0, 100_000, "Mbit/s")),
    Key("per_peer_mbit", 0.0, "limit for each remote address, both directions, in Mbit/s "
        "(0: none), so one greedy peer cannot take the whole link",
        FloatRange(0, 100_000, "Mbit/s")),
    Key("burst_s", 1.0, "seconds of traffic a burst may carry above the rate",
        FloatRange(0.05, 600, "seconds")),
    Key("monthly_cap_gb", 0.0, "traffic allowed per billing cycle in GB (10^9 bytes; 0: no cap); "
        "paced so it lasts the whole cycle", FloatRange(0, 1_000_000, "GB")),
    Key("billing_day", 1, "day of the month the cycle starts (29-31: the month's last day in "
        "shorter months)", IntRange(1, 31)),
    Key("cap_counts", "both", "which direction counts against the cap", OneOf("both", "up", "down")),
    Key("quiet_hours", [], 'local time windows with their own rate, e.g. ["18:00-23:00"]',
        EachParses(parse_window, 'a list of "HH:MM-HH:MM" strings')),
    Key("quiet_mbit", 1.0, "rate in each direction during quiet hours, Mbit/s",
        FloatRange(0.01, 100_000, "Mbit/s")),
    Key("persist_interval", 5.0, "seconds between saves of the cycle's byte count (a crash "
        "loses at most this much accounting)", FloatRange(0.1, 3600, "seconds")),
    Key("unmetered_networks", ["127.0.0.0/8", "::1/128"], "traffic with these networks is "
        "neither shaped nor counted against the cap (it never crosses the metered line; the box "
        'talking to its own addresses never is); add your LAN, e.g. "192.168.1.0/24", so local '
        "clients are never paced", EachParses(lambda n: ipaddress.ip_network(
            n, strict=False), 'a list of networks like "192.168.1.0/24"')),
    Key("cycle_s", 0, "cycle of this many seconds instead of the billing month, starting at "
        "whole multiples since 1970-01-01 UTC (0: monthly from billing_day; for tests)",
        Check("0, or an integer from 10 to 31622400", lambda v: v == 0 or 10 <= v <= 31_622_400)),
])  # fmt: skip

STORAGE = Section("storage", "protecting the SD card (quota: [store] quota_bytes)", [
    Key("free_floor_mb", 256, "keep this many MB free on the data partition, evicting the "
        "messages that expire soonest", IntRange(0, 10_000_000)),
    Key("daily_write_budget_mb", 4096, "MB the card may absorb per day (counted from the disk's "
        "own sector counter); past it stores get 'write_budget' until local midnight (0: none)",
        IntRange(0, 10_000_000)),
    Key("block_device", "auto", "disk whose sectors-written counter is used (auto: the one "
        "holding the data dir; empty: count the node's own writes)"),
    Key("check_interval", 10.0, "seconds between disk checks", FloatRange(0.05, 3600, "seconds")),
])  # fmt: skip

SECTIONS = (HAL, THERMAL, BANDWIDTH, STORAGE)
