from hal.core import civil

from tests.hal.core.check import raises

# Reference points computed independently (Unix epoch day numbers).
KNOWN = (((1970, 1, 1), 0), ((2000, 3, 1), 11017), ((2024, 2, 29), 19782),
         ((2026, 11, 30), 20787), ((1969, 12, 31), -1), ((2100, 3, 1), 47541))


def test_days_round_trip_against_known_dates():
    for ymd, days in KNOWN:
        assert civil.days_from_civil(*ymd) == days, ymd
        assert civil.civil_from_days(days) == ymd, days


def test_round_trip_over_four_centuries_is_consecutive():
    prev = None
    for z in range(-1000, 146097 + 1000, 7):
        y, m, d = civil.civil_from_days(z)
        assert civil.days_from_civil(y, m, d) == z
        assert 1 <= d <= civil.days_in_month(y, m)
        if prev is not None:
            assert (y, m, d) > prev
        prev = (y, m, d)


def test_leap_years():
    assert civil.days_in_month(2024, 2) == 29 and civil.days_in_month(2100, 2) == 28
    assert civil.days_in_month(2000, 2) == 29 and civil.days_in_month(2026, 4) == 30


def test_billing_cycle_clamps_to_short_months():
    day = civil.days_from_civil(2026, 2, 28)
    start, end = civil.billing_cycle_days(day, 31)
    assert civil.civil_from_days(start) == (2026, 2, 28)
    assert civil.civil_from_days(end) == (2026, 3, 31)
    start, end = civil.billing_cycle_days(civil.days_from_civil(2026, 2, 27), 31)
    assert civil.civil_from_days(start) == (2026, 1, 31)
    assert civil.civil_from_days(end) == (2026, 2, 28)


def test_billing_cycle_spans_year_end():
    start, end = civil.billing_cycle_days(civil.days_from_civil(2027, 1, 3), 15)
    assert civil.civil_from_days(start) == (2026, 12, 15)
    assert civil.civil_from_days(end) == (2027, 1, 15)
    raises(ValueError, civil.billing_cycle_days, 0, 0)
    raises(ValueError, civil.billing_cycle_days, 0, 32)


def test_local_offset_moves_the_day_edge():
    t = civil.days_from_civil(2026, 6, 1) * civil.DAY_MS + 23 * 3600000  # 23:00 UTC
    assert civil.local_day(t, 0) == civil.days_from_civil(2026, 6, 1)
    assert civil.local_day(t, 2 * 3600000) == civil.days_from_civil(2026, 6, 2)
    assert civil.minute_of_day(t, 2 * 3600000) == 60
    # local midnight of 2 June at UTC+2 is 22:00 UTC on 1 June
    assert civil.day_start_ms(civil.local_day(t, 7200000), 7200000) == t - 3600000


def test_windows_parse_and_wrap_midnight():
    w = civil.parse_window("22:00-07:00")
    assert w == (1320, 420)
    assert civil.in_window(23 * 60, w) and civil.in_window(0, w) and civil.in_window(419, w)
    assert not civil.in_window(420, w) and not civil.in_window(12 * 60, w)
    assert civil.in_window(18 * 60, civil.parse_window("18:00-23:00"))
    for bad in ("22-07", "25:00-01:00", "10:00-10:00", "ab:cd-01:00", "10:00"):
        e = raises(ValueError, civil.parse_window, bad)
        assert "HH:MM" in str(e) or "same" in str(e) or "hours" in str(e), str(e)
