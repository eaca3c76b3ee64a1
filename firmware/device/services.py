"""DeviceServices: the node as an appliance - LED, button, health monitor, governors.

Built once by the node with everything it needs passed in; it gives back, for the node to wire:
  services   `services()`: leds, health, storage guard, bandwidth, button (name, run) pairs
  admission  `refuse_when_hot` (store, onion: busy), `refuse_in_minimum_service` (expire) for
             the pipeline's admit stage; `make_room` (eviction, full, write budget) for its
             make-room stage
  shaping    `bandwidth.wrap` for the listener and the dialer (both directions count)
  actions    the `Actions` object the node created, updated in place by the health monitor
  info       health, health_reason and a `device` map in `info` / `homenode status`
"""

import signal

import trio

from firmware.device.button import ButtonService, run_command, shutdown_argv, wipe_data_dir
from firmware.device.health import HealthMonitor
from firmware.device.leds import LedService, mono_ms
from firmware.device.storage_guard import StorageGuard
from firmware.exit_status import EXIT_POWEROFF, EXIT_RESTART
from firmware.proto.errors import Busy

__all__ = ["DeviceServices"]


class DeviceServices:
    def __init__(self, cfg, hw, actions, bandwidth, *, data_dir, store, clock_ms, log, node_phase,
                 quiesce, stop=None, peers_live=None, has_bootstrap=lambda: False,
                 update_phase=None):
        """`cfg`: the whole node config; `hw`: firmware.device.hardware.open_device_hardware();
        `bandwidth`: the BandwidthService (built first: the listener and the dialer wrap their
        streams with it); `quiesce()`: async, stop taking requests and flush the store;
        `stop(exit_status)`: end the node (default: SIGTERM to this process); the rest: see
        HealthMonitor."""
        self.cfg = cfg
        self.hw = hw
        self.log = log
        self.data_dir = data_dir
        self.quiesce = quiesce
        self.stop = stop or (lambda status: signal.raise_signal(signal.SIGTERM))
        self.leds = LedService(hw.leds)
        self.bandwidth = bandwidth
        self.storage = StorageGuard(store, cfg.storage, hw.disk_space, hw.block_stats,
                                    clock_ms, log)
        self.health = HealthMonitor(cfg, hw, actions, self.leds, self.bandwidth, self.storage,
                                    clock_ms=clock_ms, log=log, node_phase=node_phase,
                                    peers_live=peers_live, has_bootstrap=has_bootstrap,
                                    update_phase=update_phase)
        self.actions = actions
        self.button = ButtonService(hw.button, cfg.hal, self.leds,
                                    safe_shutdown=self.safe_shutdown,
                                    factory_reset=self.factory_reset,
                                    log=log) if hw.button else None

    def services(self):
        """(name, run) of every device service, in start order."""
        out = [("device_leds", self.leds.run), ("device_health", self.health.run),
               ("device_storage", self.storage.run), ("device_bandwidth", self.bandwidth.run)]
        if self.button is not None:
            out.append(("device_button", self.button.run))
        return out

    # -- the pipeline's admit and make-room stages ------------------------------------------

    def refuse_when_hot(self, req, conn, now_ms) -> None:
        if self.actions.refuse_new_work:
            raise Busy(f"this node is not taking new work right now (too hot: "
                       f"{self.health.governor.reason}); go elsewhere")

    def refuse_in_minimum_service(self, req, conn, now_ms) -> None:
        if self.actions.minimum_service:
            raise Busy(f"this node is in minimum service ({self.health.governor.reason}); "
                       "retry later")

    async def make_room(self, size: int) -> None:
        """Evict to fit `size` bytes, or raise StorageFull / WriteBudgetSpent."""
        await self.storage.admit_store(size)

    # -- button actions -------------------------------------------------------------------

    async def safe_shutdown(self, why):
        """Stop taking requests, get everything onto the card, show "safe to unplug", run the
        shutdown command, stop the node. Whatever fails on the way, the node still stops: the
        owner asked for it and will pull the plug."""
        self.log.info("safe_shutdown", reason=why)
        status = 0
        try:
            await self.quiesce()
            self.bandwidth.save(fsync=True)
            self.health.stopped = True
            self.health.set_state("safe_to_unplug", "shut down cleanly")
            self.leds.keep_on_exit = True
            self.leds.show_now()
            argv = shutdown_argv(self.cfg.hal.shutdown_command)
            if argv:
                await run_command(argv, self.log, "shutdown")
            elif self.cfg.hal.shutdown_command == "auto" and self.hw.kind == "pi":
                status = EXIT_POWEROFF
        except Exception as e:  # noqa: BLE001 - reported, and the node stops all the same
            self.log.error("safe_shutdown_step_failed", error=f"{type(e).__name__}: {e}")
        finally:
            self.stop(status)

    async def factory_reset(self, why):
        self.log.warning("factory_reset", reason=why, data_dir=self.data_dir)
        await self.quiesce()
        self.bandwidth.stopped = True
        try:
            removed = await trio.to_thread.run_sync(wipe_data_dir, self.data_dir)
        except (OSError, RuntimeError) as e:
            self.health.fatal(f"factory reset failed: {e}")
            self.log.error("factory_reset_failed", error=str(e))
            return
        self.log.warning("factory_reset_done", removed=removed,
                         note="identity and data wiped; a new identity is made at next start")
        self.stop(EXIT_RESTART)

    # -- status ---------------------------------------------------------------------------

    def info(self):
        h = self.health
        anim = self.leds.animator
        return {
            "health": h.state,
            "health_reason": h.reason,
            "device": {
                "backend": self.hw.kind,
                "temp_c": None if h.temp_mc is None else round(h.temp_mc / 1000, 1),
                "thermal_tier": h.governor.tier,
                "temp_sensor_ok": h.governor.sensor_ok,
                "sensor_reads": h.ticks,
                "throttle_flags": (None if h.throttle_flags is None
                                   else f"0x{h.throttle_flags:x}"),
                "actions": self.actions.as_dict(),
                "led_overlay": anim.overlay(mono_ms()) if anim is not None else None,
                "bandwidth": self.bandwidth.info(),
                "storage": self.storage.info(),
                "button_events": len(self.button.events) if self.button else None,
            },
        }
