"""Fake sysfs/procfs trees in a tmp dir, shaped like a Raspberry Pi's (paths as on the device)."""

import os
import pathlib

PI4 = "Raspberry Pi 4 Model B Rev 1.4\x00"


class FakeSys:
    def __init__(self, root):
        self.root = pathlib.Path(root)

    def write(self, device_path, text):
        """Atomic, as a sysfs read never sees a half-written value."""
        p = self.root / device_path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, p)
        return p

    def read(self, device_path):
        return (self.root / device_path.lstrip("/")).read_text()

    def remove(self, device_path):
        (self.root / device_path.lstrip("/")).unlink()

    def model(self, text=PI4):
        self.write("/proc/device-tree/model", text)

    def led(self, name, trigger="[mmc0] none timer heartbeat", max_brightness=255):
        self.write(f"/sys/class/leds/{name}/trigger", trigger)
        self.write(f"/sys/class/leds/{name}/max_brightness", f"{max_brightness}\n")
        self.write(f"/sys/class/leds/{name}/brightness", "0\n")

    def thermal_zone(self, n, temp, zone_type="cpu-thermal"):
        self.write(f"/sys/class/thermal/thermal_zone{n}/type", zone_type + "\n")
        if temp is not None:
            self.write(f"/sys/class/thermal/thermal_zone{n}/temp", temp)

    def throttled(self, text):
        self.write("/sys/devices/platform/soc/soc:firmware/get_throttled", text)

    def block(self, disk, sectors_written, major=179, minor=0, partition=None, pminor=2):
        stat = f"  5000 100 400000 3000 {sectors_written // 2} 50 {sectors_written} 900 0 1 2\n"
        self.write(f"/sys/block/{disk}/stat", stat)
        target = self.root / "sys/block" / disk
        if partition:
            self.write(f"/sys/block/{disk}/{partition}/partition", "2\n")
            self.write(f"/sys/block/{disk}/{partition}/stat", stat)
            target = target / partition
            minor = pminor
        link = self.root / f"sys/dev/block/{major}:{minor}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(os.path.relpath(target, link.parent), link)

    def pi(self, temp="48500\n", throttled="0\n"):
        """A typical Pi 4: model, ACT and PWR LEDs, cpu-thermal zone, throttle file."""
        self.model()
        self.led("ACT")
        self.led("PWR", trigger="none [default-on] timer")
        self.thermal_zone(0, temp)
        self.throttled(throttled)
        return self
