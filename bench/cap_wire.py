"""Bytes on the wire against the monthly cap, over a shortened cycle, in network namespaces.

A node (cap of --cap-mb MB, cycle of --cycle-s s) in one namespace, tests/hal/cap_generator.py in
another wanting far more than the cap, nftables counting every IP byte both ways on the node's
veth (GSO off: one packet per segment) and, separately, those inside one whole cycle. Meanwhile
`homenode status` runs on the box again and again (by node.json and by its own address).
Figures per run and medians over --runs:

  wire/cap         bytes on the wire in the cycle / cap            (target <= 1.005)
  wire/counted     every wire byte of the run / the node's count   (1.0 = the count is the wire)
  status           probes answered / made, and the slowest          (target: all, well under 8 s)

Needs root, iproute2 and nftables (as the netns tests).

    .venv/bin/python bench/cap_wire.py [--runs 3] [--cap-mb 4] [--cycle-s 20]
"""

import argparse
import json
import os
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the harness is in tests

from tests.hal import capnet  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cap-mb", type=float, default=4.0)
    p.add_argument("--cycle-s", type=int, default=20)
    p.add_argument("--links", type=int, default=3)
    a = p.parse_args()
    problem = capnet.why_not()
    if problem:
        sys.exit(f"cap_wire: {problem}")
    runs = []
    for i in range(a.runs):
        r = capnet.measure(cap_bytes=int(a.cap_mb * 1e6), cycle_s=a.cycle_s, links=a.links)
        probes = r.pop("probes")
        r.pop("node_bandwidth_after")
        r["status_ok"] = sum(1 for x in probes if x["rc"] == 0)
        r["status_made"] = len(probes)
        r["status_slowest_s"] = max(x["took_s"] for x in probes)
        runs.append(r)
        print(f"run {i + 1}: wire/cap {r['wire_per_cap']:.4f} (in {r['wire_in']} out "
              f"{r['wire_out']} of {r['cap_bytes']}), wire/counted {r['wire_per_counted']:.4f}, "
              f"status {r['status_ok']}/{r['status_made']} slowest {r['status_slowest_s']} s",
              flush=True)
    summary = {
        "runs": runs,
        "median_wire_per_cap": statistics.median(r["wire_per_cap"] for r in runs),
        "max_wire_per_cap": max(r["wire_per_cap"] for r in runs),
        "median_wire_per_counted": statistics.median(r["wire_per_counted"] for r in runs),
        "status_failed": sum(r["status_made"] - r["status_ok"] for r in runs),
        "load": os.getloadavg(),
    }
    print(json.dumps(summary))
    print(f"cap {a.cap_mb} MB per {a.cycle_s} s cycle, {a.runs} runs: wire/cap median "
          f"{summary['median_wire_per_cap']:.4f} max {summary['max_wire_per_cap']:.4f} "
          f"(target <= 1.005); wire/counted median {summary['median_wire_per_counted']:.4f}; "
          f"status probes failed {summary['status_failed']}; load {summary['load'][0]:.2f}")


if __name__ == "__main__":
    main()
