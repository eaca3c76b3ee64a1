"""Node health: facts from the node and the governors -> one LED state, its reason, and what
the node must do about it (pure; the health monitor service feeds it and applies the result).

Why one function: `homenode status`, the logs and the LED must tell the same story, so they all
print what this returns.
"""

from hal.core import led
from hal.core.thermal import CRITICAL, HOT, NORMAL, WARM, decode_throttled

# Node lifecycle phases the daemon reports.
PHASES = ("booting", "needs_setup", "connecting", "running", "updating", "stopped")


class Facts:
    """Everything the health decision looks at. Unknowns stay None."""

    def __init__(self, phase="booting", fatal=None, thermal_tier=NORMAL, thermal_reason="",
                 throttle_flags=None, bandwidth_pacing=False, storage_problem=None,
                 phase_reason="", sensor_problem=None):
        if phase not in PHASES:
            raise ValueError("unknown node phase %r (known: %s)" % (phase, ", ".join(PHASES)))
        self.phase = phase
        self.phase_reason = phase_reason  # why booting / needs_setup / connecting / updating
        self.sensor_problem = sensor_problem  # a sensor the node cannot read (shown, not hidden)
        self.fatal = fatal
        self.thermal_tier = thermal_tier
        self.thermal_reason = thermal_reason
        self.throttle_flags = throttle_flags
        self.bandwidth_pacing = bandwidth_pacing
        self.storage_problem = storage_problem


class Actions:
    """What the node does about it; every service reads the fields it cares about."""

    def __init__(self):
        self.pause_background = False   # sweeps, compaction, anti-entropy
        self.refuse_new_work = False    # new relays and stores -> "busy"
        self.minimum_service = False    # only retrieve/delete/info
        self.pause_heavy_writes = False  # under-voltage: no compaction, no bulk hand-off
        self.bandwidth_scale = 1.0

    def as_dict(self):
        return {"pause_background": self.pause_background,
                "refuse_new_work": self.refuse_new_work,
                "minimum_service": self.minimum_service,
                "pause_heavy_writes": self.pause_heavy_writes,
                "bandwidth_scale": self.bandwidth_scale}

    def __eq__(self, other):
        return isinstance(other, Actions) and self.as_dict() == other.as_dict()

    def copy_from(self, other):
        """Take `other`'s decisions in place: services hold this object and read it live."""
        self.pause_background = other.pause_background
        self.refuse_new_work = other.refuse_new_work
        self.minimum_service = other.minimum_service
        self.pause_heavy_writes = other.pause_heavy_writes
        self.bandwidth_scale = other.bandwidth_scale


def actions_for(thermal_tier, under_voltage, hot_bandwidth_scale=0.25,
                critical_bandwidth_scale=0.05):
    a = Actions()
    if thermal_tier in (WARM, HOT, CRITICAL):
        a.pause_background = True
    if thermal_tier in (HOT, CRITICAL):
        a.refuse_new_work = True
        a.bandwidth_scale = hot_bandwidth_scale
    if thermal_tier == CRITICAL:
        a.minimum_service = True
        a.bandwidth_scale = critical_bandwidth_scale
    if under_voltage:
        a.pause_heavy_writes = True
        a.pause_background = True
    return a


def active_states(facts):
    """State name -> reason for every state that currently holds."""
    active = {}
    phase = facts.phase
    if phase == "stopped":
        active["safe_to_unplug"] = "shut down cleanly"
    if facts.fatal:
        active["fatal_error"] = facts.fatal
    if phase == "updating":
        active["updating"] = facts.phase_reason or "installing an update"
    flags = decode_throttled(facts.throttle_flags) if facts.throttle_flags is not None else None
    if flags is not None and flags["under_voltage"]:
        active["under_voltage"] = "power supply under-voltage (throttle flags 0x%x)" % (
            facts.throttle_flags)
    if facts.storage_problem:
        active["storage_trouble"] = facts.storage_problem
    heat = facts.thermal_tier in (HOT, CRITICAL)
    fw = flags is not None and (flags["throttled"] or flags["freq_capped"])
    if heat or fw or facts.bandwidth_pacing:
        why = []
        if heat:
            why.append("temperature %s: %s" % (facts.thermal_tier, facts.thermal_reason))
        if fw:
            why.append("firmware throttling the CPU (flags 0x%x)" % facts.throttle_flags)
        if facts.bandwidth_pacing:
            why.append("pacing traffic to last the monthly cap")
        active["throttled"] = "; ".join(why)
    if phase in ("booting", "needs_setup", "connecting"):
        active[phase] = facts.phase_reason or {"booting": "starting up",
                                               "needs_setup": "no usable network configuration",
                                               "connecting": "looking for peers"}[phase]
    return active


def node_state(facts):
    """(state, reason) for the LED, status output and logs. A sensor the node cannot read does
    not change the state (the node works, assuming the worse case) but is the reason shown."""
    state, reason = led.pick_state(active_states(facts))
    if facts.sensor_problem:
        reason = facts.sensor_problem if not reason else reason + "; " + facts.sensor_problem
    return state, reason
