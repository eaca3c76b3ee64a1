"""The node as an appliance: LED, button, health monitor, thermal governor, bandwidth shaper,
storage guard.

The decisions themselves live in ``hal.core`` (pure, MicroPython-compatible); this package only
feeds them sensor readings and the clock, and applies what they decide. The node builds
``DeviceServices`` (firmware/device/services.py) with its collaborators; config sections
``[hal] [thermal] [bandwidth] [storage]`` are declared in firmware/device/settings.py.
"""
