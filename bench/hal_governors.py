"""Cost of the hal core decisions per call vs a bare token bucket, plus the month-of-traffic figures.

floor  = TokenBucket.take (the cheapest decision the node already makes per request)
shaper = BandwidthShaper.claim (link bucket + paced monthly cap + quiet hours), per send
thermal = ThermalGovernor.update (median smoothing + hysteresis)
led    = LedAnimator.poll
Also: a simulated 31-day cycle with demand ~3.5x the cap (the same model as
tests/hal/core/test_bandwidth.py): share of the cap used and how evenly it is spread.
Medians over RUNS runs (the machine is noisy). Prints one JSON object, then a one-line summary.

    .venv/bin/python bench/hal_governors.py [--runs 7] [--number 100000]
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the month model lives in tests

from hal.core import civil, led  # noqa: E402
from hal.core.bandwidth import BandwidthShaper  # noqa: E402
from hal.core.bucket import TokenBucket  # noqa: E402
from hal.core.thermal import ThermalGovernor  # noqa: E402
from tests.hal.core.test_bandwidth import naive_cutoff_day, simulate, spread  # noqa: E402


def per_call_ns(fn, number):
    t0 = time.perf_counter_ns()
    fn(number)
    return (time.perf_counter_ns() - t0) / number


def floor(number):
    b = TokenBucket(1e9, 1e9, 0)
    take = b.take
    for i in range(number):
        take(1000, i)


def shaper(number):
    s = BandwidthShaper(0, monthly_cap_bytes=10**12, billing_day=1,
                        quiet_windows=[civil.parse_window("19:00-22:00")])
    claim = s.claim  # what every shaped send asks
    for i in range(number):
        claim("up", 1000, i)


def thermal(number):
    g = ThermalGovernor()
    update = g.update
    for i in range(number):
        update(60000 + (i % 20) * 1000, i)


def animator(number):
    a = led.LedAnimator(0, "storage_trouble")
    poll = a.poll
    for i in range(number):
        poll(i * 7)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--number", type=int, default=100_000)
    args = ap.parse_args(argv)
    results = {}
    for name, fn in (("floor", floor), ("shaper", shaper), ("thermal", thermal),
                     ("led", animator)):
        results[name + "_ns"] = statistics.median(
            per_call_ns(fn, args.number) for _ in range(args.runs))
    cap = 300 * 10**9
    t0 = time.perf_counter()
    sh, daily, demand = simulate(cap, 40000)
    sim_s = time.perf_counter() - t0
    hi, lo, days_ok = spread(daily)
    out = {
        **{k: round(v, 1) for k, v in results.items()},
        "shaper_over_floor": round(results["shaper_ns"] / results["floor_ns"], 2),
        "thermal_over_floor": round(results["thermal_ns"] / results["floor_ns"], 2),
        "led_over_floor": round(results["led_ns"] / results["floor_ns"], 2),
        "month": {"cap_bytes": cap, "demand_bytes": demand,
                  "used_over_cap": round(sh.budget.used_bytes / cap, 5),
                  "daily_max_over_mean": round(hi, 3), "daily_min_over_mean": round(lo, 3),
                  "days_with_half_mean_share": round(days_ok, 3),
                  "unpaced_cutoff_day": naive_cutoff_day(cap, 40000) + 1,
                  "sim_seconds": round(sim_s, 3)},
        "runs": args.runs, "number": args.number, "python": sys.version.split()[0],
    }
    print(json.dumps(out))
    m = out["month"]
    print(f"shaper {out['shaper_ns']:.0f} ns/decision = {out['shaper_over_floor']}x bare bucket "
          f"({out['floor_ns']:.0f} ns); thermal {out['thermal_over_floor']}x, led "
          f"{out['led_over_floor']}x; month: {m['used_over_cap'] * 100:.2f} % of cap used, "
          f"daily max/mean {m['daily_max_over_mean']}, every day served "
          f"({m['days_with_half_mean_share'] * 100:.0f} %), unpaced would stop on day "
          f"{m['unpaced_cutoff_day']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
