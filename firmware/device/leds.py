"""The LED service: drives the LED bank from hal.core.led's animator, sleeping between changes."""

import math

import trio

from hal.core import led

__all__ = ["LedService", "mono_ms"]


def mono_ms():
    return int(trio.current_time() * 1000)


class LedService:
    """Drives the LED bank from a `LedAnimator`; sleeps until the next change or a wake-up."""

    def __init__(self, bank):
        self.bank = bank
        self.animator = None
        self.keep_on_exit = False  # "safe to unplug" must stay lit after the node stops
        self._wake = trio.Event()

    def _anim(self):
        if self.animator is None:
            self.animator = led.LedAnimator(mono_ms(), "booting")
        return self.animator

    def set_state(self, name, reason=""):
        if self._anim().set_state(name, mono_ms(), reason):
            self._wake.set()

    def overlay(self, name, now_ms, duration_ms):
        self._anim().show_overlay(name, now_ms, duration_ms)
        self._wake.set()

    def clear_overlay(self):
        self._anim().clear_overlay()
        self._wake.set()

    def show_now(self):
        """Apply the current output immediately (before a shutdown command)."""
        now = mono_ms()
        out, _ = self._anim().poll(now)
        self.bank.apply(out, now)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            while True:
                now = mono_ms()
                out, nxt = self._anim().poll(now)
                self.bank.apply(out, now)
                self._wake = trio.Event()
                with trio.move_on_at(nxt / 1000 if nxt >= 0 else math.inf):
                    await self._wake.wait()
        finally:
            if not self.keep_on_exit:
                self.bank.close()
