"""Temperature and firmware throttle flags from a Pi (or a simulation of one).

Every read returns a plain value or None; a bad sensor is logged once through `Complaints`
and never raises, because the governors must keep running when the hardware lies.
"""

import subprocess

from hal.core.thermal import parse_throttled

# The firmware driver's sysfs twin of `vcgencmd get_throttled` (prints the bits in hex without
# 0x; drivers/firmware/raspberrypi.c). Its parent is soc:firmware under the platform bus,
# whose name varies by model (soc on Pi 0-4, other buses on newer boards), hence the glob.
THROTTLED_PATHS = (
    "/sys/devices/platform/soc/soc:firmware/get_throttled",
    "/sys/devices/platform/*/soc:firmware/get_throttled",
)
CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "soc-thermal", "soc_thermal", "x86_pkg_temp")
PSUTIL_KEYS = ("cpu_thermal", "cpu-thermal", "soc_thermal", "coretemp", "k10temp")


class ThermalSensor:
    """CPU temperature in milli-degC from /sys/class/thermal, else psutil."""

    def __init__(self, root, complaints, psutil_module=None, valid_min_mc=0,
                 valid_max_mc=125000):
        self.root = root
        self.complaints = complaints
        self.psutil = psutil_module
        self.valid_min_mc = valid_min_mc
        self.valid_max_mc = valid_max_mc
        self.source = None

    def _zones(self):
        zones = self.root.glob("/sys/class/thermal/thermal_zone*")
        typed = []
        for z in zones:
            t = (self.root.read_text(z + "/type") or "").strip()
            typed.append((0 if t in CPU_ZONE_TYPES else 1, z))
        typed.sort()
        return [z for _, z in typed]

    def read_mc(self):
        for z in self._zones():
            text = self.root.read_text(z + "/temp")
            if text is None:
                continue
            self.source = z + "/temp"
            return self._check(text, self.source)
        if self.psutil is not None and hasattr(self.psutil, "sensors_temperatures"):
            try:
                temps = self.psutil.sensors_temperatures() or {}
            except Exception as e:  # psutil raises various OSErrors on odd kernels
                temps = {}
                self.complaints.problem("thermal:psutil", "psutil.sensors_temperatures() "
                                        f"failed: {e}")
            for key in PSUTIL_KEYS + tuple(sorted(temps)):
                entries = temps.get(key)
                if entries:
                    self.source = "psutil:" + key
                    return self._check_mc(int(round(entries[0].current * 1000)), self.source)
        self.source = None
        self.complaints.problem("thermal", "no temperature sensor found (looked in {} and "
                                "psutil): thermal governor assumes 'warm'"
                                .format(self.root.path("/sys/class/thermal")))
        return None

    def _check(self, text, where):
        s = text.strip()
        try:
            mc = int(s)
        except ValueError:
            self.complaints.problem("thermal", f"temperature sensor {where} reads {s[:40]!r}, "
                                    "not an integer "
                                    "of milli-degC: thermal governor assumes 'warm'")
            return None
        return self._check_mc(mc, where)

    def _check_mc(self, mc, where):
        if not self.valid_min_mc <= mc <= self.valid_max_mc:
            self.complaints.problem(
                "thermal", f"temperature sensor {where} reads {mc / 1000:.1f} degC, outside the "
                f"plausible {self.valid_min_mc // 1000}..{self.valid_max_mc // 1000} degC: "
                "thermal governor assumes 'warm'")
            return None
        self.complaints.clear("thermal", f"temperature sensor {where} reads sane values again")
        return mc


class ThrottleReader:
    """Firmware throttle flags: sysfs get_throttled, else `vcgencmd get_throttled`.

    `read()` may run a subprocess: call it from a worker thread in async code.
    """

    def __init__(self, root, complaints, vcgencmd="vcgencmd", run=subprocess.run,
                 timeout_s=2.0):
        self.root = root
        self.complaints = complaints
        self.vcgencmd = vcgencmd
        self.run = run
        self.timeout_s = timeout_s
        self.source = None

    def _sysfs_paths(self):
        out = []
        for pattern in THROTTLED_PATHS:
            for p in self.root.glob(pattern):
                if p not in out:
                    out.append(p)
        return out

    def read(self):
        tried = []
        for p in self._sysfs_paths():
            text = self.root.read_text(p)
            tried.append(p)
            value = parse_throttled(text)
            if value is not None:
                self.source = p
                self.complaints.clear("throttle", "throttle flags readable again from " + p)
                return value
        if self.vcgencmd:
            tried.append(self.vcgencmd + " get_throttled")
            try:
                r = self.run([self.vcgencmd, "get_throttled"], capture_output=True, text=True,
                             timeout=self.timeout_s)
                value = parse_throttled(r.stdout) if r.returncode == 0 else None
            except (OSError, subprocess.SubprocessError, ValueError):
                value = None
            if value is not None:
                self.source = self.vcgencmd
                self.complaints.clear("throttle", "throttle flags readable again from vcgencmd")
                return value
        self.source = None
        self.complaints.problem("throttle", "firmware throttle flags unreadable (tried %s): "
                                "under-voltage cannot be detected" % (", ".join(tried) or
                                                                     "nothing"))
        return None


class SimThermal:
    """A settable temperature (dev machines, QEMU, tests). None = sensor missing."""

    def __init__(self, mc=45000):
        self.mc = mc
        self.source = "simulated"

    def read_mc(self):
        return self.mc


class SimThrottle:
    def __init__(self, flags=0):
        self.flags = flags
        self.source = "simulated"

    def read(self):
        return self.flags
