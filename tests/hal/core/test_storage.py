from hal.core import civil
from hal.core.storage import EVICT, OK, REFUSE, StoragePolicy, WriteBudget, eviction_plan

from tests.hal.core.check import raises

T0 = civil.days_from_civil(2026, 6, 1) * civil.DAY_MS + 10 * 3600000  # 10:00 UTC
MB = 1000000


def policy(quota=10 * MB, floor=50 * MB, budget=100 * MB):
    return StoragePolicy(quota, floor, WriteBudget(budget, T0))


def test_admits_when_under_quota_and_above_floor():
    assert policy().admit(1000, 5 * MB, 500 * MB, T0).verdict == OK


def test_quota_and_floor_ask_for_eviction_of_the_larger_shortfall():
    a = policy().admit(MB, 10 * MB, 500 * MB, T0)
    assert a.verdict == EVICT and a.need_bytes == MB
    a = policy().admit(MB, 5 * MB, 50 * MB + 1000, T0)
    assert a.verdict == EVICT and a.need_bytes == MB - 1000
    assert policy(quota=0, floor=0).admit(1000, 10 ** 12, 0, T0).verdict == OK


def test_refuses_with_reasons_when_eviction_cannot_help():
    a = policy().admit(11 * MB, 0, 500 * MB, T0)
    assert a.verdict == REFUSE and "larger than the whole storage quota" in a.reason
    a = policy().admit(MB, 100, 10 * MB, T0)
    assert a.verdict == REFUSE and "disk nearly full" in a.reason


def test_daily_write_budget_refuses_until_local_midnight():
    wb = WriteBudget(10 * MB, T0, offset_ms=2 * 3600000)
    p = StoragePolicy(0, 0, wb)
    wb.add(10 * MB - 100, T0)
    assert p.admit(100, 0, None, T0).verdict == OK
    a = p.admit(101, 0, None, T0)
    assert a.verdict == REFUSE and "write budget" in a.reason and "midnight" in a.reason
    midnight = wb.resets_at_ms(T0)
    assert midnight == civil.days_from_civil(2026, 6, 2) * civil.DAY_MS - 2 * 3600000
    assert wb.spent(T0 + 1) is False and wb.allows(100, T0)
    assert p.admit(101, 0, None, midnight).verdict == OK
    assert wb.written_today(midnight) == 0


def test_device_counter_deltas_count_and_resets_are_a_new_baseline():
    wb = WriteBudget(MB, T0)
    wb.observe_total(5 * 10 ** 9, T0)          # first reading: baseline only
    wb.observe_total(5 * 10 ** 9 + 4096, T0)
    assert wb.written_today(T0) == 4096
    wb.observe_total(1000, T0 + 1)             # counter reset (reboot): no negative writes
    wb.observe_total(2000, T0 + 2)
    assert wb.written_today(T0 + 2) == 5096
    wb.observe_total(2000 + MB, T0 + 3)
    assert wb.spent(T0 + 3)


def test_eviction_takes_expired_first_then_soonest_to_expire():
    msgs = [("c", 100, T0 + 5000), ("a", 100, T0 - 1), ("d", 100, T0 + 5000),
            ("b", 100, T0 - 100), ("e", 100, T0 + 9000), ("f", 100, T0 + 1000)]
    keys, freed = eviction_plan(msgs, 0, T0)
    assert keys == ["b", "a"] and freed == 200          # expired go even when not needed
    keys, freed = eviction_plan(msgs, 250, T0)
    assert keys == ["b", "a", "f"] and freed == 300
    keys, freed = eviction_plan(msgs, 350, T0)
    assert keys == ["b", "a", "f", "c"]                 # tie at T0+5000 broken by key
    keys, freed = eviction_plan(list(reversed(msgs)), 350, T0)
    assert keys == ["b", "a", "f", "c"]                 # input order does not matter
    keys, freed = eviction_plan(msgs, 10 ** 6, T0)
    assert freed == 600 and len(keys) == 6


def test_over_limits_reports_what_to_evict_now():
    p = policy()
    assert p.over_limits(12 * MB, 500 * MB) == 2 * MB
    assert p.over_limits(MB, 45 * MB) == 5 * MB
    assert p.over_limits(MB, None) == 0


def test_rejects_bad_configuration():
    raises(ValueError, WriteBudget, -1, T0)
    raises(ValueError, StoragePolicy, -1, 0, WriteBudget(0, T0))
