"""Identity proof of work: what an id costs an honest Pi and an attacker, measured here.

solver:  firmware.proto.pow.search, the honest first-boot solver (CPython), in hashes per
         second of CPU on this machine.
floor:   BLAKE2b compression in C (hashlib over one large buffer, per 128-byte block): what an
         attacker's native code pays per try on one core of this machine (a GPU does far more).
verify:  firmware.proto.pow.verify of a proof, per call.

The arithmetic it prints: expected tries = 2**bits; the Pi Zero 2 W time = tries x solver time
here x PI_RATIO (10: one Cortex-A53 core at 1 GHz runs CPython loops ~10x slower than one
core of this x86 machine; an estimate to replace with a measurement on the board); the
attacker's CPU for ids (at the C floor) and for grinding one target's swarm under v1's plain
id ranking: to hold 3 of 5 places among N honest ids it needs ~N ground ids (each beats the
3rd-best honest id with probability ~3/N), for all 5 ~5N. Under v2 placement the ranking of
networks does not depend on ids, so grinding buys no places at all (bench/attack_sim.py).
Times are CPU time (time.process_time). Prints one JSON object and a summary.
Usage: .venv/bin/python bench/pow.py [--runs 5] [--bits 24]
"""

import argparse
import hashlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from firmware.proto import pow  # noqa: E402

PI_RATIO = 10.0
DAY_S = 86_400


def solver_us(n=1_000_000):
    node_id = os.urandom(32)
    t0 = time.process_time()
    pow.search(node_id, pow.MAX_BITS, 0, n)  # 48 bits: practically never found, a full run
    return (time.process_time() - t0) / n * 1e6


def floor_us(blocks=200_000):
    buf = os.urandom(128 * blocks)
    t0 = time.process_time()
    hashlib.blake2b(buf).digest()
    return (time.process_time() - t0) / blocks * 1e6


def verify_us(bits=16, n=20_000):
    node_id = os.urandom(32)
    nonce = pow.solve(node_id, bits)
    t0 = time.process_time()
    for _ in range(n):
        pow.verify(node_id, nonce, bits)
    return (time.process_time() - t0) / n * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bits", type=int, default=pow.DEFAULT_BITS)
    a = ap.parse_args()
    solver = statistics.median(solver_us() for _ in range(a.runs))
    floor = statistics.median(floor_us() for _ in range(a.runs))
    verify = statistics.median(verify_us() for _ in range(a.runs))
    tries = pow.expected_hashes(a.bits)
    here_s = tries * solver / 1e6
    pi_s = here_s * PI_RATIO
    id_c_s = tries * floor / 1e6
    grind = {}
    for n in (1_000, 10_000):
        grind[n] = {"ids_3_of_5": n, "ids_5_of_5": 5 * n,
                    "cpu_days_3_of_5": n * id_c_s / DAY_S,
                    "cpu_days_5_of_5": 5 * n * id_c_s / DAY_S,
                    "v1_free_ids_cpu_s_5_of_5": 5 * n * 40e-6}  # fmt: skip
    out = {"bench": "pow", "bits": a.bits, "expected_tries": tries, "runs": a.runs,
           "solver_us_per_try": round(solver, 4), "c_floor_us_per_try": round(floor, 4),
           "verify_us": round(verify, 2), "pi_ratio": PI_RATIO,
           "first_identity_here_s": round(here_s, 1), "first_identity_pi_s": round(pi_s, 1),
           "first_identity_pi_s_95th": round(pi_s * 3.0, 1),
           "attacker_s_per_id_c_floor": round(id_c_s, 2),
           "attacker_ids_per_cpu_day": round(DAY_S / id_c_s),
           "grind_one_target_v1_placement": grind}  # fmt: skip
    print(json.dumps(out, indent=2))
    g = grind[10_000]
    print(f"pow {a.bits} bits = {tries:,} tries: solver {solver:.3f} us/try here -> "
          f"{here_s:.1f} s here, ~{pi_s:.0f} s on a Pi Zero 2 W (x{PI_RATIO:g}; 5% of boots "
          f"> {3 * pi_s:.0f} s); verify {verify:.2f} us; attacker at the C floor "
          f"{floor:.3f} us/try: {id_c_s:.2f} s/id, {DAY_S / id_c_s:,.0f} ids per CPU-day; "
          f"grinding 3 of 5 places of one target among 10,000 honest ids under v1 ranking: "
          f"{g['cpu_days_3_of_5']:.2f} CPU-days (5 of 5: {g['cpu_days_5_of_5']:.2f}), "
          f"vs {g['v1_free_ids_cpu_s_5_of_5']:.0f} CPU-s with free ids")  # fmt: skip


if __name__ == "__main__":
    main()
