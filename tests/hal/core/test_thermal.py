from hal.core import thermal

from tests.hal.core.check import raises


def ramp(gov, start_c, end_c, step_c, t0=0):
    """Feed whole-degree samples 1 s apart; return [(degC, tier)] and the end time."""
    out = []
    t = t0
    c = start_c
    while (step_c > 0 and c <= end_c) or (step_c < 0 and c >= end_c):
        out.append((c, gov.update(c * 1000, t)))
        c += step_c
        t += 1000
    return out, t


def first(trace, tier):
    for c, t in trace:
        if t == tier:
            return c
    return None


def test_heat_ramp_50_85_60_passes_tiers_with_hysteresis():
    gov = thermal.ThermalGovernor()  # 65 / 75 / 80, 3 back, median of 3
    up, t = ramp(gov, 50, 85, 1)
    down, _ = ramp(gov, 84, 60, -1, t)
    # Median of 3 lags a rising ramp by one sample.
    assert first(up, "warm") == 66 and first(up, "hot") == 76 and first(up, "critical") == 81
    assert up[-1][1] == "critical"
    # Leaves a tier 3 degC below its threshold (one sample of lag the other way).
    # smoothed (= sample + 1 on the way down) must drop below 77, 72, 62
    assert first(down, "hot") == 75
    assert first(down, "warm") == 70
    assert first(down, "normal") == 60
    print("heat ramp up: warm@%d hot@%d critical@%d; down: hot@%d warm@%d normal@%d degC" % (
        first(up, "warm"), first(up, "hot"), first(up, "critical"),
        first(down, "hot"), first(down, "warm"), first(down, "normal")))


def test_hovering_at_a_threshold_does_not_flap():
    gov = thermal.ThermalGovernor(window=1)
    tiers = [gov.update(mc, i * 1000) for i, mc in enumerate((65000, 64000, 65500, 62500, 64900))]
    assert tiers == ["warm", "warm", "warm", "warm", "warm"]
    assert gov.update(61999, 9000) == "normal"


def test_a_single_spike_is_smoothed_away():
    gov = thermal.ThermalGovernor()
    for i in range(3):
        gov.update(50000, i * 1000)
    assert gov.update(95000, 3000) == "normal"
    assert gov.update(50000, 4000) == "normal"


def test_missing_or_absurd_samples_give_the_safe_tier_then_recover():
    for bad in (None, -5000, 200000, "garbage", 4.5):
        gov = thermal.ThermalGovernor()
        gov.update(50000, 0)
        assert gov.update(bad, 1000) == "warm", bad
        assert not gov.sensor_ok and "assuming warm" in gov.reason
        assert gov.update(50000, 2000) == "normal"
        assert gov.sensor_ok


def test_jumps_straight_to_critical_and_records_change_time():
    gov = thermal.ThermalGovernor(window=1)
    assert gov.update(90000, 5000) == "critical" and gov.changed_ms == 5000


def test_rejects_bad_configuration():
    raises(ValueError, thermal.ThermalGovernor, 75000, 65000, 80000)
    raises(ValueError, thermal.ThermalGovernor, fail_tier="tepid")


def test_decode_throttle_flags():
    f = thermal.decode_throttled(0x50005)
    assert f["under_voltage"] and f["throttled"] and not f["freq_capped"]
    assert f["under_voltage_occurred"] and f["throttled_occurred"]
    assert not f["soft_temp_limit"] and not f["soft_temp_limit_occurred"]
    f = thermal.decode_throttled(0x80008)
    assert f["soft_temp_limit"] and f["soft_temp_limit_occurred"] and not f["under_voltage"]
    assert not any(thermal.decode_throttled(0).values())


def test_parse_throttled_accepts_vcgencmd_and_sysfs_forms_only():
    assert thermal.parse_throttled("throttled=0x50005\n") == 0x50005
    assert thermal.parse_throttled("50005\n") == 0x50005
    assert thermal.parse_throttled("0x0") == 0
    for bad in (None, "", "throttled=", "zz", "error=1 error_msg", "123456789"):
        assert thermal.parse_throttled(bad) is None, bad
