"""The button: identify, safe shutdown, factory reset (gestures decided by hal.core.button).

Edges arrive from gpiozero's thread (or a simulated button) and are handed to trio with
`TrioToken.run_sync_soon`, which is safe from any thread, including trio's own. All timing uses
trio's clock, so tests drive holds with MockClock instead of sleeping.
"""

import math
import os
import shlex
import shutil

import trio

from firmware.identity import NODE_KEY_FILE
from hal.core import button as gestures
from hal.core.button import ButtonLogic


def mono_ms():
    return int(trio.current_time() * 1000)


class ButtonService:
    def __init__(self, hw_button, cfg, leds, *, safe_shutdown, factory_reset, log):
        """`cfg`: the [hal] section; `safe_shutdown(why)` / `factory_reset(why)`: async
        actions the gestures trigger; `leds`: the LedService for the gesture feedback."""
        self.hw_button = hw_button
        self.leds = leds
        self.safe_shutdown = safe_shutdown
        self.factory_reset = factory_reset
        self.log = log
        self.logic = ButtonLogic(shutdown_ms=int(cfg.shutdown_hold_s * 1000),
                                 reset_ms=int(cfg.reset_hold_s * 1000),
                                 confirm_ms=int(cfg.reset_confirm_s * 1000))
        self.identify_ms = int(cfg.identify_s * 1000)
        self.events = []  # every gesture seen, for status and tests

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        token = trio.lowlevel.current_trio_token()
        send, recv = trio.open_memory_channel(64)

        def deliver(pressed):
            try:
                send.send_nowait(pressed)
            except trio.WouldBlock:
                pass  # 64 unprocessed edges: a bouncing contact; dropping is harmless

        def on_edge(pressed):  # any thread
            try:
                token.run_sync_soon(deliver, pressed)
            except trio.RunFinishedError:
                pass

        self.hw_button.start(on_edge)
        task_status.started()
        try:
            while True:
                deadline = self.logic.next_deadline()
                at = deadline / 1000 if deadline >= 0 else math.inf
                with trio.move_on_at(at):
                    pressed = await recv.receive()
                    now = mono_ms()
                    await self.handle(self.logic.press(now) if pressed
                                      else self.logic.release(now))
                    continue
                await self.handle(self.logic.poll(mono_ms()))
        finally:
            self.hw_button.stop()

    async def handle(self, events):
        leds = self.leds
        for ev in events:
            self.events.append(ev)
            now = mono_ms()
            if ev == gestures.SHORT_PRESS:
                self.log.info("button", gesture="short_press", action="identify")
                leds.overlay("identify", now, self.identify_ms)
            elif ev == gestures.HOLD_SHUTDOWN:
                leds.overlay("hold_ack", now, 0)
            elif ev == gestures.HOLD_RESET:
                leds.overlay("reset_armed", now, 0)
            elif ev == gestures.SHUTDOWN:
                self.log.info("button", gesture="hold", action="safe_shutdown")
                leds.clear_overlay()
                await self.safe_shutdown("button held")
            elif ev == gestures.RESET_ARMED:
                self.log.warning("button", gesture="long_hold", action="factory_reset_armed",
                                 confirm_within_s=self.logic.confirm_ms / 1000)
                leds.overlay("reset_armed", now, self.logic.confirm_ms)
            elif ev == gestures.RESET_CANCELLED:
                self.log.info("button", action="factory_reset_cancelled")
                leds.clear_overlay()
            elif ev == gestures.FACTORY_RESET:
                await self.factory_reset("button confirmed")


def shutdown_argv(setting):
    """`[hal] shutdown_command` -> argv list, or None when no command is to be run.

    "auto" runs nothing: the node exits with EXIT_POWEROFF on a Pi and the service manager,
    which holds the privilege the node lacks, powers the box off.
    """
    if setting == "auto":
        return None
    argv = shlex.split(setting)
    return argv or None


async def run_command(argv, log, what):
    try:
        r = await trio.run_process(argv, check=False, capture_stdout=True, capture_stderr=True)
    except OSError as e:
        log.error(what + "_command_failed", command=shlex.join(argv), error=e.strerror or str(e))
        return None
    level = log.info if r.returncode == 0 else log.error
    level(what + "_command", command=shlex.join(argv), rc=r.returncode,
          stderr=r.stderr.decode(errors="replace")[-300:])
    return r.returncode


def wipe_data_dir(data_dir):
    """Delete everything in the node's data dir (identity key, store, accounting).

    Refuses a directory without the node key so a misconfigured path cannot wipe something else.
    """
    if not os.path.isfile(os.path.join(data_dir, NODE_KEY_FILE)):
        raise RuntimeError(f"{data_dir} has no {NODE_KEY_FILE}: not a homenode data dir, "
                           "refusing to wipe it")
    removed = 0
    for name in os.listdir(data_dir):
        path = os.path.join(data_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        removed += 1
    return removed
