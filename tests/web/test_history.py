"""Chart history: bucketing (downsampling), bounded size, byte form, counter deltas (pure), and
the recorder's durable saves (real files, trio's autojump clock)."""

import math
import os

import pytest
import trio

from firmware.web.history import (
    MAX_FILE_BYTES,
    CounterDeltas,
    History,
    Tier,
    sample_from_info,
)
from firmware.web.recorder import HistoryRecorder, load_history, write_durably


def test_gauges_average_and_traffic_sums_per_bucket():
    t = Tier("day", 120, 720)
    t.add(0, {"temp_c": 40.0, "up_bytes": 100, "messages": 3})
    t.add(60, {"temp_c": 50.0, "up_bytes": 50, "messages": 5})
    t.add(120, {"temp_c": 70.0, "up_bytes": 1})  # next bucket closes the first
    assert t.points("temp_c") == [(0, 45.0), (120, 70.0)]
    assert t.points("up_bytes") == [(0, 150.0), (120, 1.0)]
    assert t.points("messages") == [(0, 4.0)]  # no sample in the open bucket: left out
    assert t.points("temp_c", include_open=False) == [(0, 45.0)]


def test_each_tier_keeps_its_last_slots_whatever_the_uptime():
    h = History()
    for minute in range(60 * 24 * 40):  # 40 days, one sample a minute
        h.add(minute * 60, {"temp_c": 40 + minute % 7, "messages": minute, "peers_live": 3,
                            "up_bytes": 10, "down_bytes": 20})
    day, month = h.tier("day"), h.tier("month")
    assert len(day.buckets) == 720 and len(month.buckets) == 720
    assert day.buckets[-1][0] * 120 - day.buckets[0][0] * 120 == 719 * 120   # 24 h
    assert month.buckets[-1][0] - month.buckets[0][0] == 719                   # 30 days
    assert month.points("up_bytes")[-2][1] == 600.0  # 60 samples x 10 bytes in an hour
    data = h.to_bytes()
    assert len(data) < MAX_FILE_BYTES / 50  # ~35 KB
    back = History.from_bytes(data)
    assert back.tier("month").points("messages") == month.points("messages", include_open=False)


def test_clock_going_back_is_ignored_not_a_crash():
    t = Tier("day", 120, 10)
    t.add(1000, {"temp_c": 1.0})
    t.add(2000, {"temp_c": 2.0})
    t.add(500, {"temp_c": 9.0})  # behind a finished bucket
    assert [v for _, v in t.points("temp_c")] == [1.0, 2.0]


@pytest.mark.parametrize("damage", [b"", b"garbage", None])
def test_damaged_bytes_are_refused_with_a_reason(damage):
    data = History().to_bytes()
    bad = damage if damage is not None else data[:-3] + b"xyz"
    with pytest.raises(ValueError):
        History.from_bytes(bad)


def test_counter_deltas_handle_resets_and_missing_values():
    d = CounterDeltas()
    assert d.delta("up", 100) is None
    assert d.delta("up", 150) == 50
    assert d.delta("up", 20) == 20  # the cycle started again
    assert d.delta("up", None) is None and d.delta("up", 30) is None
    info = {"messages": 4, "peers_live": 2, "device": {"temp_c": 51.5, "bandwidth": {
        "up_bytes": 10, "down_bytes": 5}}}
    deltas = CounterDeltas()
    assert sample_from_info(info, deltas) == {"temp_c": 51.5, "up_bytes": None,
                                              "down_bytes": None, "messages": 4, "peers_live": 2}
    info["device"]["bandwidth"]["up_bytes"] = 30
    assert sample_from_info(info, deltas)["up_bytes"] == 20


def test_damaged_file_is_set_aside_and_charts_start_afresh(tmp_path):
    path = str(tmp_path / "history.bin")
    with open(path, "wb") as f:
        f.write(b"HNHIST1\n\x00\x00\x00\x00broken")
    h = load_history(path)
    assert all(not t.buckets for t in h.tiers)
    assert os.path.exists(path + ".bad") and not os.path.exists(path)


async def test_recorder_samples_each_minute_saves_at_most_each_interval_and_at_stop(
        tmp_path, autojump_clock):
    path = str(tmp_path / "history.bin")
    clock = {"ms": 1_700_000_000_000}
    calls = []

    def status():
        clock["ms"] += 60_000
        calls.append(clock["ms"])
        return {"time": clock["ms"], "messages": len(calls), "peers_live": 1,
                "device": {"temp_c": 50.0, "bandwidth": {"up_bytes": 100 * len(calls),
                                                         "down_bytes": 0}}}

    async def inline(fn, *args):
        return fn(*args)

    rec = HistoryRecorder(path, status=status, save_interval=600, offload=inline)
    async with trio.open_nursery() as n:
        await n.start(rec.run)
        await trio.sleep(60 * 59 + 1)  # an hour of samples
        assert len(calls) == 60
        assert rec.saves == 5  # at 10, 20 ... 50 min: never more often than the interval
        n.cancel_scope.cancel()
    assert rec.saves == 6  # and once at the stop
    back = load_history(path)
    pts = back.tier("day").points("messages")
    assert len(pts) >= 29 and pts[-1][1] > 55
    assert math.isclose(back.tier("day").points("up_bytes")[-1][1], 200.0)


def test_write_durably_replaces_whole_files(tmp_path):
    path = str(tmp_path / "f")
    write_durably(path, b"one")
    write_durably(path, b"two")
    assert open(path, "rb").read() == b"two" and os.listdir(tmp_path) == ["f"]
