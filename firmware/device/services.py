"""DeviceServices: hardware + health monitor + LED + governors, plugged into a Node.

What the node gets (see ``install``):
  services   device_leds, device_health, device_storage, device_bandwidth, device_button
  admission  `store`/`expire` guard on the RPC handler (busy when hot, write budget, eviction);
             an onion-relay admission check (busy when hot)
  pauses     the store's expiry sweeps and replication's anti-entropy skip their round while
             the health actions say pause_background
  info       health, health_reason and a `device` map in `info` / `homenode status`
"""

import math
import signal

import trio

from firmware.config import ConfigError
from firmware.device.button import (
    ButtonService,
    run_command,
    shutdown_argv,
    wipe_data_dir,
)
from firmware.device.shaping import BandwidthService
from firmware.device.storage_guard import StorageGuard
from firmware.exit_status import EXIT_POWEROFF, EXIT_RESTART
from firmware.proto.errors import Busy
from hal.backends.factory import open_hardware
from hal.backends.netio import has_usable_network
from hal.core import led
from hal.core.health import PHASES, Actions, Facts, actions_for, node_state
from hal.core.thermal import ThermalGovernor, decode_throttled


def mono_ms():
    return int(trio.current_time() * 1000)


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


class DeviceServices:
    def __init__(self, node, *, pin_factory=None, env=None, stop_node=None, update_status=None):
        self.node = node
        self.update_status = update_status  # firmware.update.status.UpdateStatus (or None)
        self.cfg = node.cfg
        self.log = node.log
        t, h = self.cfg.thermal, self.cfg.hal
        try:
            self.governor = ThermalGovernor(
                int(t.warm_c * 1000), int(t.hot_c * 1000), int(t.critical_c * 1000),
                int(t.hysteresis_c * 1000), window=t.smoothing_samples)
            if h.reset_hold_s <= h.shutdown_hold_s:
                raise ValueError("[hal] reset_hold_s must be longer than shutdown_hold_s")
            self.hw = open_hardware(
                backend=h.backend, sysfs_root=h.sysfs_root, env=env, data_dir=node.data_dir,
                onboard_leds=h.onboard_leds, led_pin=h.led_pin, rgb_pins=tuple(h.rgb_pins),
                led_pwm=h.led_pwm, led_active_high=h.led_active_high, button_pin=h.button_pin,
                button_pull_up=h.button_pull_up, vcgencmd=h.vcgencmd or None,
                block_device=self.cfg.storage.block_device or None, pin_factory=pin_factory,
                logger=NodeLogAdapter(node.log))
        except ValueError as e:
            raise ConfigError([f"device settings: {e}"]) from None
        self.stop_node = stop_node or (lambda: signal.raise_signal(signal.SIGTERM))
        self.leds = LedService(self.hw.leds)
        self.bandwidth = BandwidthService(self.cfg.bandwidth, node.data_dir, node.clock_ms,
                                          node.log, self.hw.net)
        self.storage = StorageGuard(node.store, self.cfg.storage, self.hw.disk_space,
                                    self.hw.block_stats, node.clock_ms, node.log)
        self.button = ButtonService(self, self.hw.button, node.log) if self.hw.button else None
        self.actions = Actions()
        self.phase_override = None  # "stopped" after a safe shutdown
        self.fatal_reason = None
        self.state, self.reason = "booting", ""
        self.temp_mc = None
        self.throttle_flags = None
        self.network_usable = True
        self.paused_rounds = 0

    # -- wiring ---------------------------------------------------------------------------

    def install(self):
        node = self.node
        node.add_service("device_leds", self.leds.run)
        node.add_service("device_health", self.run_health)
        node.add_service("device_storage", self.storage.run)
        node.add_service("device_bandwidth", self.bandwidth.run)
        if self.button is not None:
            node.add_service("device_button", self.button.run)
        node.handler.add_op_guard("store", self.guard_store)
        node.handler.add_op_guard("expire", self.guard_write)
        node.handler.add_info(self.info)
        if getattr(node, "onion", None) is not None:
            node.onion.add_admission_check(self.relay_check)
        if self.bandwidth.enabled:  # both ways: connections peers open and those we open
            node.listener.wrap_stream = self.bandwidth.wrap
            node.wrap_outbound = self.bandwidth.wrap
        self._pause_when_asked(node.store, "sweep_expired", 0)
        replicator = getattr(getattr(node, "network", None), "replicator", None)
        if replicator is not None:
            self._pause_when_asked(replicator, "anti_entropy_round", None)

    def _pause_when_asked(self, obj, method, skipped_result):
        """Wrap a background round so it is skipped while `pause_background` holds."""
        original = getattr(obj, method)

        async def gated(*args, **kwargs):
            if self.actions.pause_background:
                self.paused_rounds += 1
                return skipped_result
            return await original(*args, **kwargs)

        setattr(obj, method, gated)

    # -- admission ------------------------------------------------------------------------

    def _busy_reason(self):
        if self.actions.refuse_new_work:
            return f"too hot: {self.governor.reason}"
        return None

    def relay_check(self):
        return self._busy_reason()

    async def guard_store(self, req, conn, now_ms):
        why = self._busy_reason()
        if why:
            raise Busy(f"this node is not taking stores right now ({why}); store elsewhere")
        await self.storage.admit_store(len(req.data))

    async def guard_write(self, req, conn, now_ms):
        if self.actions.minimum_service:
            raise Busy(f"this node is in minimum service ({self.governor.reason}); retry later")

    # -- health ---------------------------------------------------------------------------

    def fatal(self, reason):
        """Any part of the node may declare a fatal error: LED, status and log show it."""
        self.fatal_reason = reason

    def set_phase(self, phase):
        """Override the lifecycle phase the LED derives from the node ("updating" while an
        update installs); None returns to the derived phase."""
        if phase is not None and phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r} (known: {', '.join(PHASES)})")
        self.phase_override = phase

    def _phase(self):
        if self.phase_override:
            return self.phase_override
        if self.update_status is not None and self.update_status.phase():
            return self.update_status.phase()  # "updating": installing or on trial
        st = getattr(self.node, "state", "starting")
        if st == "starting":
            return "booting"
        if not self.network_usable:
            return "needs_setup"
        net = getattr(self.node, "network", None)
        membership = getattr(net, "membership", None)
        if membership is not None:
            try:
                live = membership.info().get("peers_live", 0)
            except Exception:  # a status read must never break the health loop
                live = 0
            if live <= 0 and self.cfg.network.bootstrap:
                return "connecting"
        return "running"

    def _read_sensors(self):
        return (self.hw.thermal.read_mc(), self.hw.throttle.read(),
                has_usable_network(self.hw.net.psutil))

    async def tick(self):
        """One health round: sensors -> governor -> state and actions -> LED, log, services."""
        now = self.node.clock_ms()
        self.temp_mc, self.throttle_flags, self.network_usable = await trio.to_thread.run_sync(
            self._read_sensors)
        old_tier = self.governor.tier
        tier = self.governor.update(self.temp_mc, now)
        if tier != old_tier:
            level = self.log.info if tier in ("normal", "warm") else self.log.warning
            level("thermal_tier", tier=tier, was=old_tier, reason=self.governor.reason)
        flags = decode_throttled(self.throttle_flags) if self.throttle_flags is not None else {}
        t = self.cfg.thermal
        actions = actions_for(tier, flags.get("under_voltage", False),
                              t.hot_bandwidth_percent / 100, t.critical_bandwidth_percent / 100)
        if actions != self.actions:
            self.log.info("device_actions", **actions.as_dict())
        self.actions = actions
        self.bandwidth.set_scale(actions.bandwidth_scale)
        facts = Facts(phase=self._phase(), fatal=self.fatal_reason, thermal_tier=tier,
                      thermal_reason=self.governor.reason, throttle_flags=self.throttle_flags,
                      bandwidth_pacing=self.bandwidth.pacing(),
                      storage_problem=self.storage.problem)
        self.set_state(*node_state(facts))

    def set_state(self, state, reason):
        if (state, reason) != (self.state, self.reason):
            quiet = state in ("healthy", "booting", "connecting", "safe_to_unplug")
            (self.log.info if quiet else self.log.warning)("device_state", state=state,
                                                             reason=reason)
            self.state, self.reason = state, reason
        self.leds.set_state(state, reason)

    async def run_health(self, *, task_status=trio.TASK_STATUS_IGNORED):
        await self.tick()
        task_status.started()
        while True:
            interval = self.cfg.hal.poll_interval
            if self.state == "booting":  # leave "booting" as soon as the node serves
                interval = min(interval, 0.1)
            await trio.sleep(interval)
            await self.tick()

    # -- button actions -------------------------------------------------------------------

    async def _quiesce(self):
        """Stop taking requests and get every acknowledged write onto the card."""
        node = self.node
        node.listener.drain()
        with trio.move_on_after(self.cfg.node.shutdown_grace):
            await node.listener.drained.wait()
        await node.store.flush()

    async def safe_shutdown(self, why):
        self.log.info("safe_shutdown", reason=why)
        await self._quiesce()
        self.bandwidth.save(fsync=True)
        self.phase_override = "stopped"
        self.set_state("safe_to_unplug", "shut down cleanly")
        self.leds.keep_on_exit = True
        self.leds.show_now()
        argv = shutdown_argv(self.cfg.hal.shutdown_command)
        if argv:
            await run_command(argv, self.log, "shutdown")
        elif self.cfg.hal.shutdown_command == "auto" and self.hw.kind == "pi":
            self.node.exit_status = EXIT_POWEROFF
        self.stop_node()

    async def factory_reset(self, why):
        self.log.warning("factory_reset", reason=why, data_dir=self.node.data_dir)
        await self._quiesce()
        self.bandwidth.stopped = True
        try:
            removed = await trio.to_thread.run_sync(wipe_data_dir, self.node.data_dir)
        except (OSError, RuntimeError) as e:
            self.fatal(f"factory reset failed: {e}")
            self.log.error("factory_reset_failed", error=str(e))
            return
        self.log.warning("factory_reset_done", removed=removed,
                         note="identity and data wiped; a new identity is made at next start")
        self.node.exit_status = EXIT_RESTART
        self.stop_node()

    # -- status ---------------------------------------------------------------------------

    def info(self):
        anim = self.leds.animator
        return {
            "health": self.state,
            "health_reason": self.reason,
            "update": self.update_status.info() if self.update_status is not None else None,
            "device": {
                "backend": self.hw.kind,
                "temp_c": None if self.temp_mc is None else round(self.temp_mc / 1000, 1),
                "thermal_tier": self.governor.tier,
                "throttle_flags": (None if self.throttle_flags is None
                                   else f"0x{self.throttle_flags:x}"),
                "actions": self.actions.as_dict(),
                "paused_rounds": self.paused_rounds,
                "led_overlay": anim.overlay(mono_ms()) if anim is not None else None,
                "bandwidth": self.bandwidth.info(),
                "storage": self.storage.info(),
                "button_events": len(self.button.events) if self.button else None,
            },
        }
