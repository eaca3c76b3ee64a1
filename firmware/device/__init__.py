"""The node as an appliance: LED, button, thermal governor, bandwidth shaper, storage guard.

``install_device(node)`` opens the hardware backend (hal.backends) and plugs the device services
into a ``firmware.node.Node``: services in its nursery, admission checks on its RPC handler and
onion relay, a stream wrapper on its listener, fields in ``info`` / ``homenode status``.
The decisions themselves live in ``hal.core`` (pure, MicroPython-compatible); this package only
feeds them sensor readings and the clock, and applies what they decide.

Config sections ``[hal] [thermal] [bandwidth] [storage]`` are declared here; the message quota
itself is ``[store] quota_bytes``.
"""

from firmware.device.settings import BANDWIDTH, HAL, SECTIONS, STORAGE, THERMAL

__all__ = ["BANDWIDTH", "HAL", "SECTIONS", "STORAGE", "THERMAL", "install_device"]


def install_device(node, **kwargs):
    """Open the hardware and plug the device services into `node`; returns DeviceServices."""
    from firmware.device.services import DeviceServices

    dev = DeviceServices(node, **kwargs)
    dev.install()
    return dev
