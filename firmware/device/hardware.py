"""Opening the device's hardware from the `[hal]` settings (hal.backends chooses the backend)."""

from firmware.config import ConfigError
from hal.backends.factory import open_hardware

__all__ = ["open_device_hardware", "NodeLogAdapter"]


class NodeLogAdapter:
    """Lets hal.backends (stdlib-logging call style) write through the node's structured Log."""

    def __init__(self, log):
        self.node_log = log

    def _emit(self, level, msg, args):
        self.node_log.event(level, "hal", msg=msg % args if args else str(msg))

    def debug(self, msg, *args):
        self._emit("debug", msg, args)

    def info(self, msg, *args):
        self._emit("info", msg, args)

    def warning(self, msg, *args):
        self._emit("warning", msg, args)

    def error(self, msg, *args):
        self._emit("error", msg, args)


def open_device_hardware(cfg, data_dir, log, *, pin_factory=None, env=None):
    """The hardware bundle (LEDs, button, sensors, disk, network counters) for `cfg` (the whole
    node config); ConfigError for settings the hardware cannot honour."""
    h = cfg.hal
    try:
        return open_hardware(
            backend=h.backend, sysfs_root=h.sysfs_root, env=env, data_dir=data_dir,
            onboard_leds=h.onboard_leds, led_pin=h.led_pin, rgb_pins=tuple(h.rgb_pins),
            led_pwm=h.led_pwm, led_active_high=h.led_active_high, button_pin=h.button_pin,
            button_pull_up=h.button_pull_up, vcgencmd=h.vcgencmd or None,
            block_device=cfg.storage.block_device or None, pin_factory=pin_factory,
            logger=NodeLogAdapter(log))
    except ValueError as e:
        raise ConfigError([f"device settings: {e}"]) from None
