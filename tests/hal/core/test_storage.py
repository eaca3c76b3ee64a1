from hal.core import civil
from hal.core.storage import EVICT, MIN_FREE_BYTES, OK, REFUSE, StoragePolicy, WriteBudget

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
    assert policy(quota=0, floor=0).admit(1000, 10 ** 12, MIN_FREE_BYTES, T0).verdict == OK


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


def test_free_pages_inside_the_file_count_toward_the_floor():
    # 45 MB free on disk, floor 50: short by 5 MB -- unless the file has 5 MB of free pages
    # (left by earlier evictions), which new messages reuse without growing it
    p = policy()
    assert p.admit(1000, MB, 45 * MB, T0).need_bytes == 5 * MB + 1000
    assert p.admit(1000, MB, 45 * MB, T0, 5 * MB + 1000).verdict == OK
    assert p.over_limits(MB, 45 * MB, 5 * MB) == 0
    # so an eviction that made room is not repeated round after round
    assert p.over_limits(MB, 45 * MB, 2 * MB) == 3 * MB


def test_below_the_hard_minimum_every_store_is_refused():
    p = policy(floor=0)
    a = p.admit(1000, 5 * MB, MIN_FREE_BYTES - 1, T0, 100 * MB)
    assert a.verdict == REFUSE and "data partition full" in a.reason
    assert p.admit(1000, 5 * MB, MIN_FREE_BYTES, T0).verdict == OK
    assert p.admit(1000, 5 * MB, None, T0).verdict == OK  # unknown free space: no opinion


def test_space_problem_names_full_and_nearly_full():
    p = policy()
    assert "data partition full: 0 bytes free" in p.space_problem(0)
    assert "nearly full: 40 MB free, floor 50 MB" in p.space_problem(40 * MB)
    assert p.space_problem(40 * MB, 10 * MB) is None
    assert p.space_problem(500 * MB) is None
    assert p.space_problem(None) is None
    assert "data partition full" in policy(floor=0).space_problem(0)


def test_over_limits_reports_what_to_evict_now():
    p = policy()
    assert p.over_limits(12 * MB, 500 * MB) == 2 * MB
    assert p.over_limits(MB, 45 * MB) == 5 * MB
    assert p.over_limits(MB, None) == 0


def test_rejects_bad_configuration():
    raises(ValueError, WriteBudget, -1, T0)
    raises(ValueError, StoragePolicy, -1, 0, WriteBudget(0, T0))
    raises(ValueError, StoragePolicy, 0, 0, WriteBudget(0, T0), -1)
