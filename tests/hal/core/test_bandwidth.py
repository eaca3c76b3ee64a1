from hal.core import civil
from hal.core.bandwidth import DOWN, UP, BandwidthShaper, MonthlyBudget

from tests.hal.core.check import raises

HOUR = 3600000
OFFSET = HOUR  # UTC+1: cycle edges and quiet hours are local
T0 = civil.day_start_ms(civil.days_from_civil(2026, 3, 15), OFFSET)  # billing day 15
GB = 1000000000

# Relative demand per local hour: a household-ish curve with an evening peak.
HOURLY = (2, 1, 1, 1, 1, 2, 4, 6, 6, 5, 5, 5, 6, 6, 5, 5, 6, 8, 10, 10, 9, 8, 5, 3)


def simulate(cap, demand_scale, days=31, step_ms=600000, early_days=0, early_factor=1.0):
    """Drive a shaper with `demand_scale` x HOURLY bytes/s wanted in each direction, the way a
    shaped link sends: claim the bytes, then wait out the claim's turn before the next one.

    Each step a direction claims what it wants for the step, unless the last claim's turn has
    not come yet (then that demand is lost, as a sender that would have given up). Returns
    (shaper, daily usage list, total demand). Pseudo-random jitter from an LCG keeps it
    deterministic on both runtimes.
    """
    sh = BandwidthShaper(T0, up_rate=4000000, down_rate=4000000, burst_s=step_ms / 1000,
                         monthly_cap_bytes=cap, billing_day=15, offset_ms=OFFSET,
                         quiet_windows=(civil.parse_window("19:00-22:00"),),
                         quiet_rate=1000000, refresh_ms=step_ms)
    daily = [0] * days
    turn = {UP: T0, DOWN: T0}  # when each direction may claim again
    seed = 12345
    demand = 0
    t = T0
    while t < T0 + days * civil.DAY_MS:
        day = (t - T0) // civil.DAY_MS
        hour = civil.minute_of_day(t, OFFSET) // 60
        seed = (seed * 1103515245 + 12345) % 2147483648
        jitter = 50 + seed % 100  # 50..149 %
        want = demand_scale * HOURLY[hour] * jitter // 100 * (step_ms // 1000)
        if day < early_days:
            want = int(want * early_factor)
        for d in (UP, DOWN):
            demand += want
            if turn[d] > t:
                continue
            claimed, wait = sh.claim(d, want, t)
            if claimed:
                daily[day] += want
            turn[d] = t + wait
        assert sh.budget.used_bytes <= cap
        t += step_ms
    return sh, daily, demand


def spread(daily):
    """Spread figures: max and min daily share over the mean, and the fraction of cycle days
    that got at least half the mean (1.0 = traffic flowed every day, nobody cut off early)."""
    mean = sum(daily) / len(daily)
    good = 0
    for u in daily:
        if u >= mean / 2:
            good += 1
    return max(daily) / mean, min(daily) / mean, good / len(daily)


def naive_cutoff_day(cap, demand_scale):
    """Day on which an unpaced cap would be exhausted by the same demand (for contrast)."""
    per_day = 0
    for h in HOURLY:
        per_day += demand_scale * h * 3600 * 2  # both directions, mean jitter 100 %
    return cap // per_day


def test_month_of_heavy_traffic_is_paced_across_the_whole_cycle():
    cap = 300 * GB
    sh, daily, demand = simulate(cap, 40000)
    used = sh.budget.used_bytes
    hi, lo, days_ok = spread(daily)
    print("month (heavy demand %.0f GB vs cap %.0f GB): used %.2f %% of cap; daily max/mean %.2f,"
          " min/mean %.2f, days with >= half the mean share %.0f %%; unpaced would stop on day %d"
          % (demand / GB, cap / GB, used * 100 / cap, hi, lo, days_ok * 100,
             naive_cutoff_day(cap, 40000) + 1))
    assert demand > 2 * cap
    assert used <= cap * 1005 // 1000
    assert used >= cap * 95 // 100
    assert days_ok == 1.0
    assert hi < 1.5 and lo > 0.5
    assert daily[-1] > 0


def test_a_light_start_leaves_more_for_the_rest_of_the_month():
    cap = 300 * GB
    sh, daily, _ = simulate(cap, 40000, early_days=10, early_factor=0.05)
    used = sh.budget.used_bytes
    assert used <= cap
    assert used >= cap * 90 // 100
    late = daily[10:]
    early = daily[:10]
    assert min(late) > max(early)
    assert max(late) / (sum(late) / len(late)) < 1.5  # the leftover is spread, not dumped
    assert daily[-1] > 0


def test_below_the_cap_nothing_is_held_back():
    sh, daily, demand = simulate(300 * GB, 500)
    assert sh.budget.used_bytes == demand
    assert not sh.pacing(T0 + 31 * civil.DAY_MS)


def test_claim_counts_at_once_and_says_how_long_to_wait_for_the_pace():
    sh = BandwidthShaper(T0, up_rate=100000, down_rate=100000, burst_s=1,
                         monthly_cap_bytes=31 * 86400 * 1000, billing_day=15, offset_ms=OFFSET,
                         min_chunk=1000)
    # paced rate is ~1000 B/s with a 1 s burst: the first 1000 bytes go at once, the second
    # 1000 are counted now and go out ~1 s later
    assert sh.claim(UP, 1000, T0) == (True, 0)
    claimed, w = sh.claim(UP, 1000, T0)
    assert claimed and 900 <= w <= 1100 and sh.pacing(T0)
    assert sh.totals[UP] == 2000 and sh.budget.used_bytes == 2000
    assert sh.debt_ms(DOWN, T0) >= w - 1  # a reader comes after it too


def test_a_large_claim_is_not_starved_by_a_stream_of_small_ones():
    # One busy client under a paced cap: it reads 700 bytes whenever nothing is owed and
    # answers with 150. A newcomer's 1100-byte TLS flight, all-or-nothing, would wait for ever
    # for a level the busy one never lets the bucket reach; claimed in turn it goes in ~1 s.
    sh = BandwidthShaper(T0, burst_s=1, monthly_cap_bytes=31 * 86400 * 1000, billing_day=15,
                         offset_ms=OFFSET, min_chunk=1000)
    t, busy_send_at, flight_at, sent_at = T0, None, T0 + 5000, None
    while t < T0 + 20000:
        if busy_send_at is None and sh.debt_ms(DOWN, t) == 0:
            sh.account(DOWN, 700, t)  # a request arrived and was read ...
            claimed, w = sh.claim(UP, 150, t)  # ... its answer goes after its turn
            busy_send_at = t + w
        elif busy_send_at is not None and t >= busy_send_at:
            busy_send_at = None
        if t == flight_at:
            claimed, w = sh.claim(UP, 1100, t)
            assert claimed
            sent_at = t + w
        t += 10
    assert sent_at is not None and sent_at - flight_at <= 2500, sent_at - flight_at
    assert sh.budget.used_bytes <= 20 * 1000 + 1000 + 850  # the pace held: ~1000 B/s


def test_spent_cap_blocks_until_the_next_cycle_then_resets():
    cap = 10 * GB
    sh = BandwidthShaper(T0, monthly_cap_bytes=cap, billing_day=15, offset_ms=OFFSET,
                         used_bytes=cap, cycle_day=civil.local_day(T0, OFFSET))
    end = sh.budget.end_ms
    assert civil.civil_from_days(civil.local_day(end, OFFSET)) == (2026, 4, 15)
    assert sh.claim(DOWN, 100, T0 + HOUR) == (False, end - (T0 + HOUR))
    st = sh.status(end)
    assert st["used_bytes"] == 0 and st["cycle_start_ms"] == end
    assert 3850 < st["paced_rate"] < 3860  # 10 GB over the 30 days to 15 May
    assert sh.claim(DOWN, 10000, end + 60000)[0]
    assert sh.budget.used_bytes == 10000


def test_quiet_hours_use_their_own_rate_and_scale_cuts_everything():
    sh = BandwidthShaper(T0, up_rate=4000000, down_rate=2000000, offset_ms=OFFSET,
                         quiet_windows=(civil.parse_window("22:00-07:00"),), quiet_rate=500000)
    assert sh.status(T0 + 3 * HOUR)["quiet"]
    assert sh.status(T0 + 3 * HOUR)["up_rate"] == 500000
    st = sh.status(T0 + 12 * HOUR)
    assert not st["quiet"] and st["up_rate"] == 4000000 and st["down_rate"] == 2000000
    sh.set_scale(0.25, T0 + 12 * HOUR)
    assert sh.status(T0 + 12 * HOUR)["up_rate"] == 1000000
    assert sh.status(T0 + 12 * HOUR)["paced_rate"] == -1  # no cap configured


def test_snapshot_restores_usage_within_the_cycle():
    sh = BandwidthShaper(T0, monthly_cap_bytes=10 * GB, billing_day=15, offset_ms=OFFSET)
    sh.account(DOWN, 5000, T0 + HOUR)
    snap = sh.snapshot()
    again = BandwidthShaper(T0 + 2 * HOUR, monthly_cap_bytes=10 * GB, billing_day=15,
                            offset_ms=OFFSET, used_bytes=snap["used_bytes"],
                            cycle_day=snap["cycle_day"])
    assert again.budget.used_bytes == 5000
    later = MonthlyBudget(10 * GB, 15, T0 + 40 * civil.DAY_MS, OFFSET, 5000, snap["cycle_day"])
    assert later.used_bytes == 0


def test_account_counts_bytes_that_already_arrived_as_debt():
    sh = BandwidthShaper(T0, up_rate=1000, down_rate=1000, burst_s=1, min_chunk=1000)
    sh.account(DOWN, 3000, T0)
    assert sh.claim(DOWN, 1000, T0) == (True, 3000)  # after 2000 of debt and 1000 more
    assert sh.totals[DOWN] == 4000


def test_debt_from_received_bytes_delays_the_next_read():
    sh = BandwidthShaper(T0, up_rate=1000, down_rate=1000, burst_s=1, min_chunk=1000,
                         monthly_cap_bytes=10 ** 9, billing_day=15, offset_ms=OFFSET)
    assert sh.debt_ms(DOWN, T0) == 0
    sh.account(DOWN, 2500, T0)
    assert sh.debt_ms(DOWN, T0) >= 1500
    assert sh.debt_ms(DOWN, T0 + 10 ** 6) == 0
    sh.account(DOWN, 10 ** 9, T0 + 10 ** 6)  # cap taken: owed until the next cycle
    assert sh.debt_ms(DOWN, T0 + 10 ** 6) == sh.budget.end_ms - (T0 + 10 ** 6)


def test_rejects_bad_configuration():
    raises(ValueError, BandwidthShaper, T0, up_rate=0)
    raises(ValueError, BandwidthShaper, T0, cap_directions="sideways")
    raises(ValueError, BandwidthShaper, T0, billing_day=0)
    raises(ValueError, MonthlyBudget, -1, 1, T0)


def test_fixed_length_cycles_align_to_the_epoch_and_roll():
    t = 1796173950000  # 10 s into a 20 s cycle
    sh = BandwidthShaper(t, monthly_cap_bytes=4000000, cycle_ms=20000)
    st = sh.status(t)
    assert st["cycle_start_ms"] == 1796173940000 and st["cycle_end_ms"] == 1796173960000
    assert sh.refresh_ms == 1000  # re-paced 20 times a cycle, not once a minute
    assert 399000 < st["paced_rate"] <= 400000  # 4 MB over the 10 s left
    sh.account(DOWN, 1000000, t)
    assert sh.status(t + 10000)["used_bytes"] == 0  # the next cycle
    raises(ValueError, MonthlyBudget, 100, 1, t, cycle_ms=-1)


def test_bytes_read_ahead_of_the_pace_are_paid_for_once():
    # A read brings what the kernel accepted (up to a window) at once: it is counted in
    # used_bytes and owed to the pacing bucket. Re-pacing must spread the remaining allowance
    # plus that debt, or the reader pays for those bytes twice and the cycle ends short.
    cap = 4000000
    t0 = 1796173940000
    sh = BandwidthShaper(t0, up_rate=10 ** 12, down_rate=10 ** 12, monthly_cap_bytes=cap,
                         cycle_ms=20000, burst_s=1.0)
    end = sh.budget.end_ms
    t = end - 1000  # the last re-pacing of the cycle: nothing later re-spreads a shortfall
    sh.account(DOWN, cap - 400000 - 200000, t)  # 400 kB left after a big read ...
    sh.pace.tokens = 0
    sh.account(DOWN, 200000, t)  # ... that left the bucket 200 kB in debt
    sh.refresh(t)
    while t < end:
        if sh.debt_ms(DOWN, t) == 0:
            sh.account(DOWN, 1000, t)
        t += 1
    assert cap - 20000 <= sh.budget.used_bytes <= cap, cap - sh.budget.used_bytes


def test_the_window_reserve_stops_reading_and_sending_before_the_cap():
    t = 1796173940000
    sh = BandwidthShaper(t, monthly_cap_bytes=1000000, cycle_ms=20000, burst_s=20.0,
                         min_chunk=1000)
    sh.account(DOWN, 900000, t)
    sh.pace.set_rate(sh.pace.rate, sh.pace.burst, t)
    sh.pace.tokens = sh.pace.burst  # pacing aside: only the cap and reserve matter here
    assert sh.debt_ms(DOWN, t) == 0
    sh.add_reserve(5000, 95000)  # 100 kB could still arrive unread: the cap is spoken for
    assert sh.reserved() == 100000
    wait = sh.debt_ms(DOWN, t)
    assert 0 < wait <= 250 and sh.pacing(t)  # held, rechecking soon (not until the cycle end)
    claimed, w = sh.claim(UP, 1000, t)
    assert not claimed and 0 < w <= 250
    sh.add_reserve(-5000, -45000)  # a connection closed: its window is free again
    assert sh.debt_ms(DOWN, t) == 0
    assert sh.claim(UP, 1000, t) == (True, 0)
    assert sh.status(t)["reserve_bytes"] == 50000


def test_reserve_in_an_uncounted_direction_does_not_hold_the_cap():
    t = 1796173940000
    sh = BandwidthShaper(t, monthly_cap_bytes=1000000, cycle_ms=20000, cap_directions="up")
    sh.add_reserve(0, 10 ** 7)
    assert sh.reserved() == 0 and sh.claim(UP, 1000, t)[0]


def test_refund_gives_back_an_estimate_that_never_went_out():
    t = 1796173940000
    sh = BandwidthShaper(t, monthly_cap_bytes=1000000, cycle_ms=20000)
    assert sh.claim(UP, 1500, t)[0]
    sh.refund(UP, 400)
    assert sh.totals[UP] == 1100 and sh.budget.used_bytes == 1100
    sh.refund(UP, 10 ** 6)  # never below zero
    assert sh.totals[UP] == 0 and sh.budget.used_bytes == 0
