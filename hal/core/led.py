"""LED codes: the ONE table mapping node states to light patterns, and a sans-IO animator.

Why one table: the code, the README and `homenode status` must never disagree about what a
blink means, so all three read `STATES` (the README table is generated from it and a test
compares them).

A pattern is a rhythm of alternating on/off durations in ms, starting with "on" (an empty rhythm
means steady on), one RGB colour, and whether the Pi's red PWR LED is lit (the "something needs
attention" lamp when only the onboard LEDs exist). The same rhythm drives a plain GPIO LED or the
green ACT LED, so every code is readable on a single LED; colour only adds to it.
"""

BLACK = (0, 0, 0)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
CYAN = (0, 255, 255)
YELLOW = (255, 180, 0)
ORANGE = (255, 80, 0)
MAGENTA = (255, 0, 255)
WHITE = (255, 255, 255)

COLOUR_NAMES = (
    (BLACK, "off"), (RED, "red"), (GREEN, "green"), (BLUE, "blue"), (CYAN, "cyan"),
    (YELLOW, "yellow"), (ORANGE, "orange"), (MAGENTA, "magenta"), (WHITE, "white"),
)

# name, priority (1 = wins), colour, rhythm (ms on, off, on, off ...), PWR lit, meaning, what to do
STATES = (
    ("safe_to_unplug", 1, GREEN, (), False,
     "Shut down cleanly", "You may pull the plug now."),
    ("fatal_error", 2, RED, (100, 100), True,
     "Stopped on an error it cannot fix", "Unplug, wait 10 s, plug in; if it persists, re-flash."),
    ("updating", 3, MAGENTA, (250, 250), False,
     "Installing an update", "Do not unplug."),
    ("under_voltage", 4, RED, (200, 200, 200, 200, 200, 200, 200, 1400), True,
     "Power supply too weak: heavy writes paused", "Use the official 5 V power supply and cable."),
    ("storage_trouble", 5, ORANGE, (200, 200, 200, 200, 200, 1400), True,
     "SD card full, failing or over its daily write budget", "Free space or replace the card."),
    ("throttled", 6, YELLOW, (200, 200, 200, 1400), False,
     "Slowed down: too hot, or pacing the monthly bandwidth cap", "Give it air; nothing else."),
    ("booting", 7, WHITE, (500, 500), False,
     "Starting up", "Wait."),
    ("needs_setup", 8, BLUE, (1500, 500), False,
     "No usable network configuration", "Edit homenode.toml on the SD card's boot partition."),
    ("connecting", 9, CYAN, (1000, 1000), False,
     "Looking for the network and its peers", "Wait; check the cable or Wi-Fi if it lasts."),
    ("healthy", 10, GREEN, (100, 2900), False,
     "Working normally", "Nothing."),
)

# Temporary patterns shown on top of the state (button feedback). name, colour, rhythm, PWR,
# default duration in ms (0 = until cleared), meaning.
OVERLAYS = (
    ("identify", WHITE, (80, 80), False, 5000,
     "Short press: this is the box you are looking at"),
    ("hold_ack", WHITE, (900, 100), False, 0,
     "Button held past 3 s: release now to shut down safely"),
    ("reset_armed", RED, (600, 100, 100, 100), True, 15000,
     "Held past 10 s: release, then press again within 15 s to wipe identity and data"),
)

STATE_NAMES = tuple(row[0] for row in STATES)
OVERLAY_NAMES = tuple(row[0] for row in OVERLAYS)


def colour_name(rgb):
    for value, name in COLOUR_NAMES:
        if value == rgb:
            return name
    return "rgb(%d,%d,%d)" % rgb


class Pattern:
    """One row of a table, as a repeating timeline."""

    def __init__(self, name, colour, rhythm, pwr, meaning, action=""):
        self.name = name
        self.colour = colour
        self.rhythm = tuple(rhythm)
        self.pwr = pwr
        self.meaning = meaning
        self.action = action
        self.period_ms = 0
        for ms in self.rhythm:
            if ms <= 0:
                raise ValueError("pattern %s: durations must be > 0 ms" % name)
            self.period_ms += ms
        if len(self.rhythm) % 2:
            raise ValueError("pattern %s: rhythm needs on/off pairs" % name)

    def timeline(self):
        """[(rgb, ms), ...] for one period; [(rgb, 0)] when steady (0 = forever)."""
        if not self.rhythm:
            return [(self.colour, 0)]
        out = []
        for i, ms in enumerate(self.rhythm):
            out.append((self.colour if i % 2 == 0 else BLACK, ms))
        return out

    def at(self, elapsed_ms):
        """(on, ms until the next change or -1 if never) at `elapsed_ms` into the pattern."""
        if not self.rhythm:
            return True, -1
        t = elapsed_ms % self.period_ms
        for i, ms in enumerate(self.rhythm):
            if t < ms:
                return i % 2 == 0, ms - t
            t -= ms
        return False, 1  # unreachable: t < period

    def describe(self):
        """Human words for the rhythm, e.g. '3 flashes, pause' (used by docs and status)."""
        r = self.rhythm
        if not r:
            return "steady"
        if len(r) == 2:
            on, off = r
            if on < off:
                return "blip every %.1f s" % ((on + off) / 1000)
            if on > off:
                return "long on %.1f s, off %.1f s" % (on / 1000, off / 1000)
            return "blink %d ms on / %d ms off" % (on, off)
        n = len(r) // 2
        if r[-1] > r[0] and all(x == r[0] for x in r[:-1]):
            return "%d flashes, pause" % n
        return "rhythm " + "/".join(str(x) for x in r) + " ms"


def _index(rows, name):
    for row in rows:
        if row[0] == name:
            return row
    raise ValueError("unknown LED code %r (known: %s)" % (name, ", ".join(r[0] for r in rows)))


def state_pattern(name):
    row = _index(STATES, name)
    return Pattern(row[0], row[2], row[3], row[4], row[5], row[6])


def overlay_pattern(name):
    row = _index(OVERLAYS, name)
    return Pattern(row[0], row[1], row[2], row[3], row[5])


def overlay_duration_ms(name):
    return _index(OVERLAYS, name)[4]


def priority(name):
    return _index(STATES, name)[1]


def pick_state(active):
    """Highest-priority active state. `active` maps state name -> reason (str).

    Returns (name, reason); ("healthy", "") when nothing is active. Unknown names raise, so a
    typo in a caller cannot silently hide a fault.
    """
    best = None
    for name in active:
        p = priority(name)
        if best is None or p < best[0]:
            best = (p, name)
    if best is None:
        return "healthy", ""
    return best[1], active[best[1]]


class LedOutput:
    """What every LED should show right now (compare with == to detect changes)."""

    def __init__(self, rgb, act, pwr):
        self.rgb = rgb
        self.act = act
        self.pwr = pwr

    @property
    def mono(self):
        return self.act

    def __eq__(self, other):
        return (isinstance(other, LedOutput) and self.rgb == other.rgb
                and self.act == other.act and self.pwr == other.pwr)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "LedOutput(rgb=%r, act=%r, pwr=%r)" % (self.rgb, self.act, self.pwr)


class LedAnimator:
    """Sans-IO: state and overlays in, (output, next change time) out.

    The driver calls `poll(now_ms)`, writes the output to whatever LEDs exist, and sleeps until
    the returned deadline or until the state changes. Patterns restart when the state changes so
    a code always starts with its first flash.
    """

    def __init__(self, now_ms, state="booting"):
        self.state = state
        self.reason = ""
        self._since = now_ms
        self._overlay = None  # (Pattern, start_ms, end_ms or None)
        state_pattern(state)

    def set_state(self, name, now_ms, reason=""):
        """Returns True if the visible state changed (pattern restarted)."""
        state_pattern(name)
        self.reason = reason
        if name == self.state:
            return False
        self.state = name
        self._since = now_ms
        return True

    def show_overlay(self, name, now_ms, duration_ms=None):
        if duration_ms is None:
            duration_ms = overlay_duration_ms(name)
        end = now_ms + duration_ms if duration_ms > 0 else None
        self._overlay = (overlay_pattern(name), now_ms, end)

    def clear_overlay(self):
        self._overlay = None

    def overlay(self, now_ms):
        """Name of the overlay showing at `now_ms`, or None."""
        ov = self._overlay
        if ov is not None and ov[2] is not None and now_ms >= ov[2]:
            self._overlay = None
            ov = None
        return ov[0].name if ov is not None else None

    def poll(self, now_ms):
        """(LedOutput, next_change_ms or -1 when nothing changes until told)."""
        if self.overlay(now_ms) is not None:
            pat, start, end = self._overlay
        else:
            pat, start, end = state_pattern(self.state), self._since, None
        on, left = pat.at(now_ms - start)
        nxt = now_ms + left if left >= 0 else -1
        if end is not None and (nxt < 0 or end < nxt):
            nxt = end
        rgb = pat.colour if on else BLACK
        return LedOutput(rgb, 1 if on else 0, 1 if pat.pwr else 0), nxt


def markdown_table():
    """The README's LED code table, generated from `STATES` and `OVERLAYS`."""
    lines = [
        "| Priority | State | Single LED / green ACT | RGB colour | Red PWR | Meaning | What to do |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(STATES, key=lambda r: r[1]):
        p = state_pattern(row[0])
        lines.append("| %d | `%s` | %s | %s | %s | %s | %s |" % (
            row[1], p.name, p.describe(), colour_name(p.colour), "on" if p.pwr else "off",
            p.meaning, p.action))
    lines.append("")
    lines.append("| Button feedback | Single LED / green ACT | RGB colour | Red PWR | Meaning |")
    lines.append("|---|---|---|---|---|")
    for row in OVERLAYS:
        p = overlay_pattern(row[0])
        lines.append("| `%s` | %s | %s | %s | %s |" % (
            p.name, p.describe(), colour_name(p.colour), "on" if p.pwr else "off", p.meaning))
    return "\n".join(lines) + "\n"
