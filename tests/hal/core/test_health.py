from hal.core.health import Facts, actions_for, active_states, node_state

from tests.hal.core.check import raises


def test_healthy_when_running_and_nothing_wrong():
    assert node_state(Facts(phase="running")) == ("healthy", "")


def test_phases_map_to_their_states():
    for phase, state in (("booting", "booting"), ("needs_setup", "needs_setup"),
                         ("connecting", "connecting"), ("updating", "updating"),
                         ("stopped", "safe_to_unplug")):
        assert node_state(Facts(phase=phase))[0] == state
    raises(ValueError, Facts, phase="dancing")


def test_priority_fatal_over_under_voltage_over_storage_over_throttled():
    f = Facts(phase="running", fatal="store corrupt", throttle_flags=0x50005,
              storage_problem="disk full", thermal_tier="hot", thermal_reason="78.0 degC")
    assert set(active_states(f)) == {"fatal_error", "under_voltage", "storage_trouble",
                                     "throttled"}
    assert node_state(f) == ("fatal_error", "store corrupt")
    f.fatal = None
    assert node_state(f)[0] == "under_voltage" and "0x50005" in node_state(f)[1]
    f.throttle_flags = 0x50000  # only "has occurred": not now
    assert node_state(f) == ("storage_trouble", "disk full")
    f.storage_problem = None
    assert node_state(f)[0] == "throttled" and "78.0 degC" in node_state(f)[1]


def test_throttled_names_every_cause():
    f = Facts(phase="running", thermal_tier="warm", bandwidth_pacing=True)
    assert node_state(f) == ("throttled", "pacing traffic to last the monthly cap")
    f.throttle_flags = 0x4
    reason = node_state(f)[1]
    assert "firmware throttling" in reason and "monthly cap" in reason
    assert node_state(Facts(phase="running", thermal_tier="warm"))[0] == "healthy"


def test_actions_per_tier():
    assert actions_for("normal", False).as_dict() == {
        "pause_background": False, "refuse_new_work": False, "minimum_service": False,
        "pause_heavy_writes": False, "bandwidth_scale": 1.0}
    warm = actions_for("warm", False)
    assert warm.pause_background and not warm.refuse_new_work
    hot = actions_for("hot", False)
    assert hot.refuse_new_work and not hot.minimum_service and hot.bandwidth_scale == 0.25
    crit = actions_for("critical", False)
    assert crit.minimum_service and crit.refuse_new_work and crit.bandwidth_scale == 0.05
    uv = actions_for("normal", True)
    assert uv.pause_heavy_writes and uv.pause_background and not uv.refuse_new_work
