"""The health monitor: sensors and the node's facts in, one state (LED, status, log) and the
actions every service follows out.

The decisions are hal.core's (thermal tiers, `actions_for`, `node_state`: pure and shared with
MicroPython); this service reads the sensors, asks the node what it is doing, and applies the
result. `actions` is one object, updated in place, that the services were given when the node
was built and read live (`actions.pause_background` skips an expiry sweep or an anti-entropy
round; `pause_heavy_writes` skips hand-off bursts and eviction bursts; `refuse_new_work` makes
stores and relays answer `busy`).

What the node is doing, in order (the first that holds is the phase):
  stopped (after a safe shutdown) > updating (an update installs or a new slot is on trial) >
  booting (the node is not serving yet) > needs_setup (no usable network interface; or the
  network is on, nobody is live and no bootstrap, seed or neighbour is known) > connecting
  (the network is on and no peer is live yet) > running.
"""

import trio

from hal.backends.netio import has_usable_network
from hal.core.health import Actions, Facts, actions_for, node_state
from hal.core.thermal import ThermalGovernor, decode_throttled

__all__ = ["HealthMonitor", "NO_BOOTSTRAP"]

NO_BOOTSTRAP = ("no bootstrap configured: this box knows no other node to join; add "
                "[network] bootstrap = [\"HOST:PORT@NODEID\"] to homenode.toml")


class HealthMonitor:
    def __init__(self, cfg, hw, actions: Actions, leds, bandwidth, storage, *, clock_ms, log,
                 node_phase, peers_live=None, has_bootstrap=lambda: False, update_phase=None):
        """`cfg`: the whole node config; `node_phase()` -> "starting" / "serving" / ...;
        `peers_live()` -> live peers (None: networking is off); `has_bootstrap()` -> whether
        any node to join is known; `update_phase()` -> (phase, reason) or None."""
        t = cfg.thermal
        self.cfg = cfg
        self.hw = hw
        self.actions = actions
        self.leds = leds
        self.bandwidth = bandwidth
        self.storage = storage
        self.clock_ms = clock_ms
        self.log = log
        self.node_phase = node_phase
        self.peers_live = peers_live
        self.has_bootstrap = has_bootstrap
        self.update_phase = update_phase
        self.governor = ThermalGovernor(
            int(t.warm_c * 1000), int(t.hot_c * 1000), int(t.critical_c * 1000),
            int(t.hysteresis_c * 1000), window=t.smoothing_samples)
        self.stopped = False  # after a safe shutdown: "safe to unplug"
        self.fatal_reason = None
        self.state, self.reason = "booting", ""
        self.temp_mc = None
        self.throttle_flags = None
        self.network_usable = True
        self.ticks = 0  # health rounds done (sensor readings)

    def fatal(self, reason: str) -> None:
        """Any part of the node may declare a fatal error: LED, status and log show it."""
        self.fatal_reason = reason

    def _phase(self):
        """(phase, reason) of what the node is doing; see the module docstring."""
        if self.stopped:
            return "stopped", ""
        if self.update_phase is not None:
            update = self.update_phase()
            if update is not None:
                return update
        if self.node_phase() == "starting":
            return "booting", ""
        if not self.network_usable:
            return "needs_setup", "no usable network: no interface with an address is up"
        live = self.peers_live() if self.peers_live is not None else None
        if live is not None and live <= 0:
            if not self.has_bootstrap():
                return "needs_setup", NO_BOOTSTRAP
            return "connecting", "looking for other nodes (no peer reached yet)"
        return "running", ""

    def _read_sensors(self):
        return (self.hw.thermal.read_mc(), self.hw.throttle.read(),
                has_usable_network(self.hw.net.psutil))

    async def tick(self):
        """One round: sensors -> governor -> state and actions -> LED, log, services."""
        self.ticks += 1
        now = self.clock_ms()
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
            self.actions.copy_from(actions)
        self.bandwidth.set_scale(actions.bandwidth_scale)
        phase, phase_reason = self._phase()
        sensor = None
        if not self.governor.sensor_ok:
            sensor = ("temperature sensor unreadable: assuming warm, background work paused; "
                      "the firmware's own throttling still protects the chip")
        facts = Facts(phase=phase, fatal=self.fatal_reason, thermal_tier=tier,
                      thermal_reason=self.governor.reason, throttle_flags=self.throttle_flags,
                      bandwidth_pacing=self.bandwidth.pacing(),
                      storage_problem=self.storage.problem, phase_reason=phase_reason,
                      sensor_problem=sensor)
        self.set_state(*node_state(facts))

    def set_state(self, state, reason):
        if (state, reason) != (self.state, self.reason):
            quiet = state in ("healthy", "booting", "connecting", "safe_to_unplug")
            (self.log.info if quiet else self.log.warning)("device_state", state=state,
                                                             reason=reason)
            self.state, self.reason = state, reason
        self.leds.set_state(state, reason)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        await self.tick()
        task_status.started()
        while True:
            interval = self.cfg.hal.poll_interval
            if self.state == "booting":  # leave "booting" as soon as the node serves
                interval = min(interval, 0.1)
            await trio.sleep(interval)
            await self.tick()
