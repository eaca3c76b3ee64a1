"""Thermal governor (tiers with hysteresis) and the Pi firmware's throttle flags.

Why tiers of our own: the Pi's firmware throttles the CPU at 80-85 °C, which slows everything
at once. Acting earlier and selectively (pause background work, then refuse new relays so clients
route around us) keeps the node useful and the SD card cool.
"""

NORMAL = "normal"
WARM = "warm"
HOT = "hot"
CRITICAL = "critical"
TIERS = (NORMAL, WARM, HOT, CRITICAL)

# What each tier means for the node; used by the status output and the README.
TIER_ACTIONS = (
    (NORMAL, "everything runs"),
    (WARM, "background work (expiry sweeps, compaction, anti-entropy) pauses"),
    (HOT, "new relays and stores get 'busy' so clients go elsewhere; bandwidth cut"),
    (CRITICAL, "minimum service only: retrieve and deletes; LED shows 'throttled'"),
)


def tier_index(tier):
    for i, name in enumerate(TIERS):
        if name == tier:
            return i
    raise ValueError("unknown thermal tier %r (known: %s)" % (tier, ", ".join(TIERS)))


class ThermalGovernor:
    """Temperature samples (milli-°C, or None when unreadable) -> tier.

    Smoothing: the median of the last `window` valid samples, so one glitchy read neither trips
    nor clears a tier. Hysteresis: a tier is entered at its threshold and left only once the
    smoothed value is `hysteresis_mc` below it. A missing or absurd sample (outside
    `valid_min_mc`..`valid_max_mc`; a running SoC is never below 0 °C, and the sensor tops out
    near 125 °C) puts the governor in `fail_tier` until valid samples return:
    without a thermometer we assume warm rather than either cooking or refusing service.
    """

    def __init__(self, warm_mc=65000, hot_mc=75000, critical_mc=80000, hysteresis_mc=3000,
                 window=3, valid_min_mc=0, valid_max_mc=125000, fail_tier=WARM):
        if not warm_mc < hot_mc < critical_mc:
            raise ValueError("thermal thresholds must rise: warm < hot < critical "
                             "(got %d, %d, %d milli-degC)" % (warm_mc, hot_mc, critical_mc))
        if hysteresis_mc < 0 or window < 1:
            raise ValueError("hysteresis must be >= 0 and window >= 1")
        tier_index(fail_tier)
        self.thresholds = (None, warm_mc, hot_mc, critical_mc)
        self.hysteresis_mc = hysteresis_mc
        self.window = window
        self.valid_min_mc = valid_min_mc
        self.valid_max_mc = valid_max_mc
        self.fail_tier = fail_tier
        self._samples = []
        self._level = 0  # tier reached from valid samples
        self.tier = NORMAL
        self.smoothed_mc = None
        self.sensor_ok = True
        self.reason = "no samples yet"
        self.changed_ms = None

    def valid(self, sample_mc):
        return (sample_mc is not None and isinstance(sample_mc, int)
                and self.valid_min_mc <= sample_mc <= self.valid_max_mc)

    def update(self, sample_mc, now_ms):
        """Feed one sample; returns the (possibly new) tier."""
        old = self.tier
        if not self.valid(sample_mc):
            self.sensor_ok = False
            self._samples = []
            self.smoothed_mc = None
            if sample_mc is None:
                self.reason = "temperature sensor unreadable: assuming %s" % self.fail_tier
            else:
                self.reason = ("temperature sensor reports %r milli-degC (outside %d..%d): "
                               "assuming %s" % (sample_mc, self.valid_min_mc, self.valid_max_mc,
                                                self.fail_tier))
            self.tier = self.fail_tier
        else:
            self.sensor_ok = True
            self._samples.append(sample_mc)
            if len(self._samples) > self.window:
                self._samples.pop(0)
            s = sorted(self._samples)
            n = len(s)
            med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
            self.smoothed_mc = med
            self._level = self._next_level(self._level, med)
            self.tier = TIERS[self._level]
            self.reason = "%.1f degC (%s)" % (med / 1000, self.tier)
        if self.tier != old:
            self.changed_ms = now_ms
        return self.tier

    def _next_level(self, level, t):
        up = 0
        for i in range(1, 4):
            if t >= self.thresholds[i]:
                up = i
        if up > level:
            return up
        while level > 0 and t < self.thresholds[level] - self.hysteresis_mc:
            level -= 1
        return level


# Firmware throttle flags (vcgencmd get_throttled; the sysfs twin prints the same bits in hex).
UNDER_VOLTAGE = 0
FREQ_CAPPED = 1
THROTTLED = 2
SOFT_TEMP_LIMIT = 3
FLAG_NAMES = ("under_voltage", "freq_capped", "throttled", "soft_temp_limit")


def decode_throttled(value):
    """Flags int -> dict name -> bool, plus `<name>_occurred` for bits 16-19 (since boot)."""
    out = {}
    for bit, name in enumerate(FLAG_NAMES):
        out[name] = bool(value & (1 << bit))
        out[name + "_occurred"] = bool(value & (1 << (16 + bit)))
    return out


def parse_throttled(text):
    """'throttled=0x50005' (vcgencmd) or '50005' (sysfs) -> int; None if unparseable."""
    if text is None:
        return None
    s = text.strip()
    if s.startswith("throttled="):
        s = s[len("throttled="):]
    if s.startswith("0x") or s.startswith("0X"):
        s = s[2:]
    if not s or len(s) > 8:
        return None
    for ch in s:
        if ch not in "0123456789abcdefABCDEF":
            return None
    return int(s, 16)
