"""Button gestures from press/release edges and a ms clock (sans-IO).

Why here and not gpiozero's `hold_time`: the timing decides a factory reset, so it must be
deterministic and testable without threads; gpiozero (or a microcontroller pin IRQ) only
reports edges.

Gestures: short press -> identify; hold >= 3 s then release -> safe shutdown; hold >= 10 s then
release -> reset ARMED (LED asks for confirmation), and only a second press within the
confirmation window -> factory reset. Anything else cancels.
"""

SHORT_PRESS = "short_press"      # released before the shutdown hold
HOLD_SHUTDOWN = "hold_shutdown"  # still held, passed the shutdown time (show feedback)
HOLD_RESET = "hold_reset"        # still held, passed the reset time (show feedback)
SHUTDOWN = "shutdown"            # released between the two hold times
RESET_ARMED = "reset_armed"      # released after the reset time: waiting for confirmation
FACTORY_RESET = "factory_reset"  # confirmed by a press within the window
RESET_CANCELLED = "reset_cancelled"


class ButtonLogic:
    def __init__(self, shutdown_ms=3000, reset_ms=10000, confirm_ms=15000):
        if not 0 < shutdown_ms < reset_ms:
            raise ValueError("button hold times must satisfy 0 < shutdown < reset")
        self.shutdown_ms = shutdown_ms
        self.reset_ms = reset_ms
        self.confirm_ms = confirm_ms
        self._pressed_at = None
        self._announced = 0  # 0 none, 1 shutdown hold shown, 2 reset hold shown
        self._armed_until = None

    @property
    def pressed(self):
        return self._pressed_at is not None

    @property
    def armed(self):
        return self._armed_until is not None

    def press(self, now_ms):
        events = self.poll(now_ms)
        if self._pressed_at is not None:
            return events  # bounce: already down
        if self._armed_until is not None:
            self._armed_until = None
            events.append(FACTORY_RESET)
            self._pressed_at = now_ms
            self._announced = 3  # this press is consumed by the confirmation
            return events
        self._pressed_at = now_ms
        self._announced = 0
        return events

    def release(self, now_ms):
        events = self.poll(now_ms)
        if self._pressed_at is None:
            return events
        held = now_ms - self._pressed_at
        announced = self._announced
        self._pressed_at = None
        self._announced = 0
        if announced == 3:
            return events
        if held >= self.reset_ms:
            self._armed_until = now_ms + self.confirm_ms
            events.append(RESET_ARMED)
        elif held >= self.shutdown_ms:
            events.append(SHUTDOWN)
        else:
            events.append(SHORT_PRESS)
        return events

    def poll(self, now_ms):
        """Time-driven events (hold feedback, confirmation timeout)."""
        events = []
        if self._armed_until is not None and now_ms >= self._armed_until:
            self._armed_until = None
            events.append(RESET_CANCELLED)
        if self._pressed_at is not None and self._announced < 3:
            held = now_ms - self._pressed_at
            if held >= self.shutdown_ms and self._announced < 1:
                self._announced = 1
                events.append(HOLD_SHUTDOWN)
            if held >= self.reset_ms and self._announced < 2:
                self._announced = 2
                events.append(HOLD_RESET)
        return events

    def next_deadline(self):
        """ms time at which `poll` may produce an event, or -1."""
        t = -1
        if self._pressed_at is not None and self._announced < 2:
            t = self._pressed_at + (self.shutdown_ms if self._announced == 0 else self.reset_ms)
        if self._armed_until is not None and (t < 0 or self._armed_until < t):
            t = self._armed_until
        return t
