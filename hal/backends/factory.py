"""Pick and open the hardware backend, the way gpiozero picks a pin factory.

`backend` comes from `[hal] backend` ("auto", "pi" or "sim"); the environment variable
HOMENODE_HAL_BACKEND overrides it (handy to force "sim" on a Pi or in QEMU). "auto" reads the
device-tree model and uses "pi" on a Raspberry Pi, else "sim" with one log line saying why.
A "pi" backend with a missing or broken part (no GPIO library, no onboard LED, no sensor) keeps
going without that part and says so once: the node must start even on odd hardware.
"""

import logging
import os

from hal.backends.button import GpioButton, SimButton
from hal.backends.disk import BlockStats, DiskSpace, find_block_device
from hal.backends.leds import GpioLed, GpioRgbLed, LedBank, SimLed, SysfsLed
from hal.backends.netio import NetCounters
from hal.backends.sensors import SimThermal, SimThrottle, ThermalSensor, ThrottleReader
from hal.backends.sysfs import Complaints, SysRoot

ENV_VAR = "HOMENODE_HAL_BACKEND"
BACKENDS = ("auto", "pi", "sim")
MODEL_PATHS = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")

log = logging.getLogger("hal")


def pi_model(root):
    """The device-tree model string if this is a Raspberry Pi, else None."""
    for p in MODEL_PATHS:
        text = root.read_text(p)
        if text:
            model = text.replace("\x00", "").strip()
            if model.startswith("Raspberry Pi"):
                return model
    return None


def choose_backend(setting, root, env=None):
    """Returns (kind "pi" or "sim", why). Raises ValueError on an unknown setting."""
    env = os.environ if env is None else env
    chosen, where = setting, "[hal] backend"
    if env.get(ENV_VAR):
        chosen, where = env[ENV_VAR].strip().lower(), ENV_VAR
    if chosen not in BACKENDS:
        raise ValueError(f"{where} = {chosen!r} is not a HAL backend: use one of "
                         + ", ".join(BACKENDS))
    if chosen != "auto":
        return chosen, f"{where} = {chosen}"
    model = pi_model(root)
    if model:
        return "pi", f"detected {model}"
    return "sim", (f"auto: no Raspberry Pi model in {root.path(MODEL_PATHS[0])}, so simulated "
                   "hardware (set [hal] "
                   f"backend or {ENV_VAR} to choose)")


class Hardware:
    """Everything the node's device services touch, opened by `open_hardware`."""

    def __init__(self, kind, why, root, complaints, leds, button, thermal, throttle, net,
                 disk_space, block_stats, model=None):
        self.kind = kind
        self.why = why
        self.root = root
        self.complaints = complaints
        self.leds = leds
        self.button = button
        self.thermal = thermal
        self.throttle = throttle
        self.net = net
        self.disk_space = disk_space
        self.block_stats = block_stats
        self.model = model

    def describe(self):
        return {"backend": self.kind, "why": self.why, "model": self.model,
                "leds": [type(x).__name__ + ":" + getattr(x, "name", "gpio")
                         for x in self.leds.all()],
                "button": type(self.button).__name__ if self.button else None,
                "thermal": getattr(self.thermal, "source", None),
                "throttle": getattr(self.throttle, "source", None),
                "block_device": self.block_stats.device if self.block_stats else None}

    def close(self):
        self.leds.close()
        if self.button is not None:
            self.button.close()


def _optional(complaints, what, make):
    try:
        return make()
    except Exception as e:  # gpiozero raises many kinds (BadPinFactory, PinInvalidPin, ...)
        complaints.problem("open:" + what, f"cannot open {what} ({type(e).__name__}: {e}): "
                           "continuing without it")
        return None


def open_hardware(backend="auto", sysfs_root="/", env=None, data_dir=".", onboard_leds=True,
                  led_pin=-1, rgb_pins=(), led_pwm=True, led_active_high=True, button_pin=-1,
                  button_pull_up=True, vcgencmd="vcgencmd", block_device="auto",
                  pin_factory=None, psutil_module=None, logger=None):
    """Open the chosen backend. Pins are BCM numbers; -1 / empty means not fitted."""
    logger = logger or log
    if psutil_module is None:
        import psutil as psutil_module
    root = SysRoot(sysfs_root)
    complaints = Complaints(logger)
    kind, why = choose_backend(backend, root, env)
    model = pi_model(root)
    if rgb_pins and len(rgb_pins) != 3:
        raise ValueError("[hal] rgb_pins must list 3 GPIO numbers (red, green, blue) or be "
                         f"empty, got {list(rgb_pins)!r}")
    if kind == "sim":
        leds = LedBank(act=[SimLed("act")], pwr=[SimLed("pwr")], rgb=[SimLed("rgb")])
        button = SimButton()
        thermal, throttle = SimThermal(), SimThrottle()
    else:
        act, pwr, rgb = [], [], []
        if onboard_leds:
            for name, bank in (("ACT", act), ("PWR", pwr)):
                led = SysfsLed(root, name, complaints)
                if led.available:
                    bank.append(led)
        if led_pin >= 0:
            led = _optional(complaints, f"LED on GPIO{led_pin}",
                            lambda: GpioLed(led_pin, pin_factory, led_pwm, led_active_high))
            if led is not None:
                act.append(led)
        if rgb_pins:
            led = _optional(complaints, "RGB LED on GPIO" + "/".join(map(str, rgb_pins)),
                            lambda: GpioRgbLed(rgb_pins, pin_factory, led_pwm, led_active_high))
            if led is not None:
                rgb.append(led)
        leds = LedBank(act, pwr, rgb)
        button = None
        if button_pin >= 0:
            button = _optional(complaints, f"button on GPIO{button_pin}",
                               lambda: GpioButton(button_pin, pin_factory, button_pull_up))
        thermal = ThermalSensor(root, complaints, psutil_module)
        throttle = ThrottleReader(root, complaints, vcgencmd)
    dev = block_device
    if dev == "auto":
        dev = find_block_device(root, data_dir) if kind == "pi" else None
    block = BlockStats(root, dev, complaints) if dev else None
    hw = Hardware(kind, why, root, complaints, leds, button, thermal, throttle,
                  NetCounters(psutil_module, complaints), DiskSpace(data_dir, complaints,
                                                                    psutil_module),
                  block, model)
    logger.info("%s backend (%s)", kind, why)
    return hw
