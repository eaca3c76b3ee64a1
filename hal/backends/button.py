"""Button edges: gpiozero `Button` on a pin, or a simulated button.

Only edges come out (`on_edge(pressed)`); timing and gestures are decided by
`hal.core.button.ButtonLogic` with the service's clock, so holds are testable without threads.
gpiozero calls back from its own thread; the service hands edges into trio with
`TrioToken.run_sync_soon`, which is safe from any thread.
"""


class GpioButton:
    def __init__(self, pin, pin_factory=None, pull_up=True, bounce_ms=20):
        from gpiozero import Button

        self.device = Button(pin, pull_up=pull_up,
                             bounce_time=bounce_ms / 1000 if bounce_ms else None,
                             pin_factory=pin_factory)
        self._on_edge = None

    def start(self, on_edge):
        self._on_edge = on_edge
        self.device.when_pressed = lambda: on_edge(True)
        self.device.when_released = lambda: on_edge(False)

    def stop(self):
        self.device.when_pressed = None
        self.device.when_released = None

    @property
    def is_pressed(self):
        return self.device.is_pressed

    def close(self):
        self.stop()
        self.device.close()


class SimButton:
    """Pressed and released by code (tests, a dev-machine console command)."""

    def __init__(self):
        self._on_edge = None
        self.is_pressed = False

    def start(self, on_edge):
        self._on_edge = on_edge

    def stop(self):
        self._on_edge = None

    def press(self):
        if not self.is_pressed:
            self.is_pressed = True
            if self._on_edge:
                self._on_edge(True)

    def release(self):
        if self.is_pressed:
            self.is_pressed = False
            if self._on_edge:
                self._on_edge(False)

    def close(self):
        self.stop()
