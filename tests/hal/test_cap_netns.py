"""The monthly cap on a real wire: bytes nftables counts between a node and a greedy peer stay
within 100.5 % of the cap over a whole (shortened) cycle, and `homenode status` on the box keeps
answering while the node paces the cap. Topology and measurement: tests/hal/capnet.py; the same
run with medians: bench/cap_wire.py."""

import os

import pytest

from tests.hal import capnet

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def cycle():
    problem = capnet.why_not()
    if problem:
        if os.environ.get("CI"):
            pytest.fail("CI must run the netns cap test: " + problem)
        pytest.skip(problem)
    return capnet.measure(cap_bytes=4_000_000, cycle_s=20, log=print)


def test_wire_bytes_stay_within_the_cap(cycle):
    ratio = cycle["wire_per_cap"]
    print(f"wire {cycle['wire_bytes']} B (in {cycle['wire_in']}, out {cycle['wire_out']}) "
          f"in a {cycle['cycle_s']} s cycle, cap {cycle['cap_bytes']} B: "
          f"wire/cap = {ratio * 100:.2f} %; whole run wire/node-counted = "
          f"{cycle['wire_per_counted']:.4f}; generator {cycle['generator']}")
    assert ratio <= 1.005, cycle
    # and the cap is used, not starved: the peer wanted far more than it
    assert ratio >= 0.90, cycle


def test_the_node_counts_what_the_wire_carries(cycle):
    # every byte both ways on the veth, against the node's own up + down count (the issue saw
    # the wire 2.3 % above the count); the count may err on the high side only, a little
    # (a dropped segment is counted as a full one)
    per = cycle["wire_per_counted"]
    assert per is not None and 0.98 <= per <= 1.001, cycle


def test_status_on_the_box_answers_while_the_cap_is_paced(cycle):
    probes = cycle["probes"]
    failed = [(p["took_s"], p["info"]) for p in probes if p["rc"] != 0]
    assert len(probes) >= 12 and not failed, failed
    by_own_address = [p for p in probes if p["own_address"]]
    assert by_own_address, "no probe by the box's own address"
    bw = [p["info"]["device"]["bandwidth"] for p in probes]
    assert any(b["pacing"] for b in bw), "the node never paced: the test proves nothing"
    slowest = max(p["took_s"] for p in probes)
    print(f"{len(probes)} status probes, slowest {slowest:.2f} s (CLI start included)")
    # operator traffic is counted apart, never against the cap
    after = cycle["node_bandwidth_after"]
    assert after["local_up_bytes"] > 0 and after["local_down_bytes"] > 0
