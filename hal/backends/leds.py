"""LED outputs: Pi onboard LEDs (sysfs), gpiozero LED/PWMLED/RGBLED, and a simulated LED.

All take what `hal.core.led.LedAnimator.poll` returns; `LedBank` fans one `LedOutput` out to
whichever LEDs this box has and writes only what changed.
"""

import collections
import logging

log = logging.getLogger("hal.leds")


class SysfsLed:
    """/sys/class/leds/<name>: set trigger "none" once, then write brightness.

    The original trigger (the bracketed entry) is put back on `close()`, so after the node
    stops the ACT LED shows SD activity again as on a stock Pi.
    """

    def __init__(self, root, name, complaints):
        self.root = root
        self.name = name
        self.complaints = complaints
        self.dir = "/sys/class/leds/" + name
        self.available = False
        self.max = 1
        self._orig_trigger = None
        self._last = None
        trig = root.read_text(self.dir + "/trigger")
        if trig is None:
            complaints.problem("led:" + name, f"onboard LED {name} not found at "
                               f"{root.path(self.dir)}: not used")
            return
        for word in trig.split():
            if word.startswith("[") and word.endswith("]"):
                self._orig_trigger = word[1:-1]
        mx = root.read_text(self.dir + "/max_brightness")
        try:
            self.max = max(1, int(mx.strip())) if mx is not None else 1
        except ValueError:
            self.max = 1
        if not root.write_text(self.dir + "/trigger", "none"):
            complaints.problem("led:" + name, f"cannot write {root.path(self.dir)}/trigger "
                               "(permissions?): onboard "
                               f"LED {name} not used")
            return
        self.available = True

    def set(self, on):
        if not self.available or on == self._last:
            return
        if self.root.write_text(self.dir + "/brightness", str(self.max if on else 0)):
            self._last = on
        else:
            self.complaints.problem("led:" + self.name,
                                    f"cannot write brightness of LED {self.name}")

    def close(self):
        if self.available and self._orig_trigger and self._orig_trigger != "none":
            self.root.write_text(self.dir + "/trigger", self._orig_trigger)
        self.available = False


class GpioLed:
    """A single LED on a GPIO pin (gpiozero LED, or PWMLED when `pwm`)."""

    def __init__(self, pin, pin_factory=None, pwm=False, active_high=True):
        from gpiozero import LED, PWMLED

        cls = PWMLED if pwm else LED
        self.device = cls(pin, active_high=active_high, pin_factory=pin_factory)

    def set(self, on):
        self.device.value = 1 if on else 0

    def close(self):
        self.device.close()


class GpioRgbLed:
    """A common-cathode (active_high) or common-anode RGB LED on three GPIO pins."""

    def __init__(self, pins, pin_factory=None, pwm=True, active_high=True):
        from gpiozero import RGBLED

        red, green, blue = pins
        self.pwm = pwm
        self.device = RGBLED(red, green, blue, active_high=active_high, pwm=pwm,
                             pin_factory=pin_factory)

    def set(self, rgb):
        if self.pwm:
            self.device.color = (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)
        else:
            self.device.color = tuple(1 if c >= 128 else 0 for c in rgb)

    def close(self):
        self.device.close()


class SimLed:
    """Records the last `keep` (time_ms, value) transitions; for dev machines and QEMU."""

    def __init__(self, name, keep=1000):
        self.name = name
        self.value = None
        self.transitions = collections.deque(maxlen=keep)

    def set(self, value, now_ms=None):
        if value != self.value:
            self.value = value
            self.transitions.append((now_ms, value))

    def close(self):
        pass


class LedBank:
    """Where an `LedOutput` goes: `act` LEDs take the rhythm, `pwr` the attention lamp, `rgb`
    the colour. Sim LEDs also get the time so their history can be compared to the table."""

    def __init__(self, act=(), pwr=(), rgb=()):
        self.act = list(act)
        self.pwr = list(pwr)
        self.rgb = list(rgb)
        self.last = None

    def apply(self, output, now_ms=None):
        last = self.last
        if last is None or output.act != last.act:
            for led in self.act:
                _set(led, output.act, now_ms)
        if last is None or output.pwr != last.pwr:
            for led in self.pwr:
                _set(led, output.pwr, now_ms)
        if last is None or output.rgb != last.rgb:
            for led in self.rgb:
                _set(led, output.rgb, now_ms)
        self.last = output

    def all(self):
        return self.act + self.pwr + self.rgb

    def close(self):
        for led in self.all():
            try:
                led.close()
            except Exception as e:  # closing must not hide the reason we are stopping
                log.warning("closing LED %r failed: %s", led, e)


def _set(led, value, now_ms):
    if isinstance(led, SimLed):
        led.set(value, now_ms)
    else:
        led.set(value)
