"""The README's `device` section, generated from the code's own tables.

The LED codes come from `hal.core.led` and the settings from this package's config sections,
so the docs cannot drift: tests/hal/test_readme_device.py compares the README with this output.
Regenerate with:  .venv/bin/python -m firmware.device.docs --write README.md
"""

import sys

from firmware.device.settings import SECTIONS
from hal.core import led
from hal.core.thermal import TIER_ACTIONS

BEGIN = "<!-- section:device -->"
END = "<!-- /section:device -->"

INTRO = """\
## The device: LED, button, heat, bandwidth, storage

One LED is the whole user interface. It works with the Pi's own LEDs alone (green ACT shows the
rhythm, red PWR lights for "needs attention") and better with an RGB LED on GPIO, which adds the
colour. When several things are wrong at once the LED shows the one with the smallest priority
number; `homenode status` (`health`, `health reason`) and the log (`device_state`) always show the
same state and say why. Without a Pi (a PC, QEMU) the same logic drives simulated LEDs.
"""

AFTER_TABLE = """\
After a safe shutdown has powered the Pi off, its firmware takes over its own LEDs (green off, red
on): that also means "safe to unplug".

### The button (optional)

- **Short press**: identify - the LED flickers white for `identify_s` seconds.
- **Hold 3 s, release**: safe shutdown. The node stops taking requests, writes everything to the
  card, shows `safe_to_unplug`, then runs `shutdown_command` (by default on a Pi the node exits with status 76 and its systemd unit, which holds the privilege the node lacks, powers the box off).
- **Hold 10 s, release, press again within 15 s**: factory reset. Releasing after 10 s only *arms*
  it (LED `reset_armed`); nothing is deleted unless the second press comes in time. The reset
  wipes the node's identity and all stored messages; the node then stops and starts afresh with a
  new identity. Letting the 15 s pass cancels it.

Hold times are `[hal] shutdown_hold_s`, `reset_hold_s`, `reset_confirm_s`.

### Optional wiring (BCM GPIO numbers)

| Part | Wire | Setting |
|---|---|---|
| Button | between GPIO3 (header pin 5) and ground (pin 6); GPIO3 also wakes a halted Pi | `button_pin = 3` |
| RGB LED, common cathode | red GPIO17 (pin 11), green GPIO27 (pin 13), blue GPIO22 (pin 15), each through 220-330 ohm; cathode to ground (pin 9) | `rgb_pins = [17, 27, 22]` |
| RGB LED, common anode | as above, anode to 3.3 V (pin 1) | also `led_active_high = false` |
| Single LED | GPIO18 (pin 12) through 330 ohm to ground | `led_pin = 18` |

### What heat, the monthly cap and the SD card do to the node

Temperature tiers (`[thermal]`; a tier is left only `hysteresis_c` below its threshold; readings
are the median of `smoothing_samples`; with no sane sensor reading the node assumes `warm`):

| Tier | From | Effect |
|---|---|---|
{tiers}

Firmware throttle flags (`vcgencmd get_throttled` or its sysfs twin) are read too: under-voltage
shows `under_voltage` and pauses heavy background writes; firmware throttling shows `throttled`.

Bandwidth (`[bandwidth]`): token buckets cap each direction at `up_mbit` / `down_mbit`; during
`quiet_hours` both use `quiet_mbit`. With `monthly_cap_gb` set, whatever is left of the cap is
spread over what is left of the billing cycle (starting on `billing_day`, local time), so a busy
week slows the node down instead of cutting it off on day 20; the cap itself is not exceeded.
While it paces, connections take turns (first come, first served): one peer sending flat out
slows everyone down but cannot starve a new connection or `homenode status` from another host.
Usage survives restarts (`bandwidth.json` in the data dir, saved every `persist_interval` s).

What counts is what an ISP meters: IP bytes on the wire, both directions, read per connection
from the kernel (Linux `TCP_INFO` and `SO_MEMINFO`: payload with retransmits, a header for every
segment including pure ACKs, segments the kernel dropped, handshake and close), and that includes
what the kernel accepted before the node read it. Near the cap each connection's receive window
is shrunk and the node stops reading while the windows still open would fill what is left, so
the kernel cannot take in more than the cap allows (a network-namespace test holds the bytes on
the wire to at most 100.5 % of the cap). Traffic is counted whether or not any limit is set:
`status` shows `up_bytes` and `down_bytes`, and `used_bytes` of `cap_bytes` for the cycle.

Operator traffic is never paced nor counted against the cap: connections between the box and
itself (loopback, or one of its own addresses) and with `unmetered_networks`. `homenode status`
on the box therefore answers at once while the node paces the cap; such bytes show as
`local_up_bytes` / `local_down_bytes`. `interfaces_per_counted_byte` compares the interfaces'
own counters with the metered count: above 1 is the box's other traffic (updates, DNS, the LAN).

Storage (`[storage]`, quota in `[store] quota_bytes`): past the quota or below the free-space
floor the messages closest to expiry are evicted (expired ones first). Evicting frees pages
inside the message file, not disk space, so those free pages count toward the floor and new
messages reuse them (the file stops growing; it is not evicted further). Below 1 MiB free the
disk counts as full: stores get `full`, `status` and the LED show `storage_trouble` with the
reason, and the node keeps serving what it holds and keeps running. It also starts normally on
a full disk: a 4 MiB reserve file next to the store (`messages.sqlite3.reserve`) is given back
so the store can open and evict, and made again once there is room. The card's own
sectors-written counter feeds a daily write budget; when it is spent, stores get the
`write_budget` error until local midnight and the LED shows `storage_trouble`.

Deletes are durable: a deleted message's hash is kept with the store until any copy of it
could have expired, so neither a restart, anti-entropy, hand-off nor storing the very same
message again brings it back (to send it again, send a new message). A data dir the node
cannot use is named as what it is, with the fix -- a permission problem (typically files left
by a run as root: `sudo chown -R <user> <data dir>`), a read-only mount (on a Pi, a card with
I/O errors: check `dmesg`), a missing directory -- never as corruption.

### Settings
"""


def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return repr(v)


def settings_tables():
    out = []
    for s in SECTIONS:
        out.append(f"`[{s.name}]` - {s.help}\n")
        out.append("| Key | Default | Meaning | Allowed |")
        out.append("|---|---|---|---|")
        for k in s.keys:
            out.append(f"| `{k.name}` | `{_value(k.default)}` | {k.help} | {k.allowed()} |")
        out.append("")
    return "\n".join(out)


def section_markdown():
    tiers = []
    names = {"warm": "warm_c (65 degC)", "hot": "hot_c (75 degC)",
             "critical": "critical_c (80 degC)", "normal": "below warm_c"}
    for tier, effect in TIER_ACTIONS:
        tiers.append(f"| {tier} | {names[tier]} | {effect} |")
    return (INTRO + "\n" + led.markdown_table() + "\n"
            + AFTER_TABLE.replace("{tiers}", "\n".join(tiers)) + "\n" + settings_tables())


def replace_section(readme_text):
    start = readme_text.index(BEGIN) + len(BEGIN)
    end = readme_text.index(END)
    return readme_text[:start] + "\n" + section_markdown() + readme_text[end:]


def current_section(readme_text):
    start = readme_text.index(BEGIN) + len(BEGIN)
    return readme_text[start:readme_text.index(END)].strip("\n")


def main(argv):
    if len(argv) == 2 and argv[0] == "--write":
        with open(argv[1]) as f:
            text = f.read()
        with open(argv[1], "w") as f:
            f.write(replace_section(text))
        return 0
    sys.stdout.write(section_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
