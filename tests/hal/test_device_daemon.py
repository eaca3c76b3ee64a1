"""Device governors in a real homenode daemon (subprocess, loopback TLS, fake sysfs tree).

The node's clock is the real one here (it is another process), so each step waits for the
node to report the state it was driven into instead of sleeping a fixed time.
"""

import json
import os

import pytest
import trio

from firmware.client import connect
from firmware.proto.errors import Busy, WriteBudgetSpent
from tests.conftest import NodeProcess, wait_info
from tests.hal.fakesys import FakeSys

RECIPIENT = bytes(range(32))
# Loopback is operator traffic (never shaped) by default. Tests of shaping take it out of
# unmetered_networks and listen on 127.0.0.2, so the client (from 127.0.0.1) is not the node's
# own address either: it stands in for a remote peer.
METERED_HOST = {"listen_host": "127.0.0.2"}


def device_node(tmp_path, **sections):
    fake = FakeSys(tmp_path / "sysroot").pi(temp="50000\n", throttled="0\n")
    cfg = {"hal": {"backend": "pi", "sysfs_root": str(fake.root), "poll_interval": 0.02,
                   "vcgencmd": ""},
           "network": {"enabled": False},
           "limits": {"rate_per_sec": 100_000.0, "rate_burst": 100_000}}
    for name, keys in sections.items():
        cfg.setdefault(name, {}).update(keys)
    return NodeProcess(tmp_path, cfg), fake


async def test_heat_ramp_tiers_busy_and_recovery(tmp_path):
    node, fake = device_node(tmp_path)
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            await wait_info(c, lambda i: i["health"] == "healthy", "healthy")
            await c.store(RECIPIENT, b"cool enough")
            trace = []
            # up 50 -> 85, down 85 -> 60; the expected tier is what the README promises
            ramp = [(50, "normal"), (64, "normal"), (65, "warm"), (74, "warm"), (75, "hot"),
                    (79, "hot"), (80, "critical"), (85, "critical"), (78, "critical"),
                    (77, "critical"), (76, "hot"), (72, "hot"), (71, "warm"), (62, "warm"),
                    (61, "normal"), (60, "normal")]
            for temp_c, want in ramp:
                fake.thermal_zone(0, f"{temp_c * 1000}\n")
                # three readings of the new value fill the median window
                info = await wait_info(
                    c, lambda i, t=temp_c: i["device"]["temp_c"] == t, f"{temp_c} degC")
                info = await wait_info(c, lambda i, w=want: i["device"]["thermal_tier"] == w,
                                       f"tier {want} at {temp_c} degC", timeout=2.0)
                trace.append((temp_c, info["device"]["thermal_tier"], info["health"]))
                if temp_c == 75:  # hot: a real client's store is refused with busy
                    assert info["health"] == "throttled"
                    assert "75.0 degC" in info["health_reason"]
                    with pytest.raises(Busy, match="not taking new work right now"):
                        await c.store(RECIPIENT, b"while hot")
                    assert info["device"]["actions"]["refuse_new_work"]
                    assert info["device"]["bandwidth"]["scale"] == 0.25
                if temp_c == 65:
                    assert info["device"]["actions"]["pause_background"]
                    assert info["health"] == "healthy"
            print("heat ramp (degC, tier, LED state):", trace)
            assert [t for _, t, _ in trace] == [w for _, w in ramp]
            r = await c.store(RECIPIENT, b"cool again")  # 60 degC: accepted again
            assert r.new
    finally:
        node.stop()
    log = node.output()
    tiers = [line.split("tier=")[1].split()[0] for line in log.splitlines()
             if " thermal_tier " in line]
    assert tiers == ["warm", "hot", "critical", "hot", "warm", "normal"], tiers
    assert "device_state state=throttled" in log


async def more_readings(client, info, n):
    """Until the node has read its sensors `n` more times than in `info`."""
    seen = info["device"]["sensor_reads"]
    await wait_info(client, lambda i: i["device"]["sensor_reads"] >= seen + n,
                    f"{n} more sensor readings")


async def test_bad_sensor_is_one_log_line_and_safe_tier(tmp_path):
    node, fake = device_node(tmp_path)
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            await wait_info(c, lambda i: i["health"] == "healthy", "healthy")
            for bad in ("garbage\n", "200000\n", "-5000\n"):
                fake.thermal_zone(0, bad)
                info = await wait_info(c, lambda i: i["device"]["thermal_tier"] == "warm",
                                       "warm with a bad sensor")
                assert info["device"]["temp_c"] is None
                await more_readings(c, info, 10)  # the bad value read again and again
                fake.thermal_zone(0, "50000\n")
                await wait_info(c, lambda i: i["device"]["thermal_tier"] == "normal", "normal")
            fake.remove("/sys/class/thermal/thermal_zone0/temp")
            info = await wait_info(c, lambda i: i["device"]["thermal_tier"] == "warm",
                                   "warm, no file")
            await more_readings(c, info, 10)
            fake.throttled("zzz\n")  # flags unreadable (and no vcgencmd configured)
            info = await wait_info(c, lambda i: i["device"]["throttle_flags"] is None, "no flags")
            await more_readings(c, info, 10)
            assert (await c.info())["health"] == "healthy"  # alive, serving, just cautious
    finally:
        node.stop()
    log = node.output()
    assert log.count("not an integer") == 1
    assert log.count("outside the plausible") == 2  # 200 degC, then -5 degC (a new message)
    assert log.count("no temperature sensor found") == 1
    assert log.count("throttle flags unreadable") == 1


async def test_write_budget_refuses_stores_and_shows_storage_trouble(tmp_path):
    node, fake = device_node(tmp_path, storage={"daily_write_budget_mb": 1, "block_device": "",
                                                "check_interval": 0.05},
                             store={"batch_ms": 1})
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            refused = None
            for i in range(200):
                try:
                    await c.store(RECIPIENT, os.urandom(40_000), ts=None)
                except WriteBudgetSpent as e:
                    refused = (i, str(e))
                    break
                await trio.sleep(0.01)
            assert refused is not None, "the write budget never stopped stores"
            assert "write budget" in refused[1] and "midnight" in refused[1]
            info = await wait_info(c, lambda i: i["health"] == "storage_trouble",
                                   "storage_trouble")
            assert "write budget spent" in info["health_reason"]
            assert info["device"]["storage"]["written_today_bytes"] + 40_000 > 1_000_000
            # reads still work
            assert (await c.info())["messages"] == refused[0]
    finally:
        node.stop()


async def test_bandwidth_accounting_survives_kill_9(tmp_path):
    # a cap so large that pacing never holds these few hundred kB back, whatever the date
    node, fake = device_node(tmp_path, node=METERED_HOST,
                             bandwidth={"monthly_cap_gb": 10000.0, "up_mbit": 1000.0,
                                        "down_mbit": 1000.0, "persist_interval": 0.1,
                                        "unmetered_networks": []})
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            for _ in range(20):
                await c.store(RECIPIENT, os.urandom(30_000))
            before = (await c.info())["device"]["bandwidth"]["used_bytes"]
            assert before > 20 * 30_000
        saved_path = tmp_path / "node/data/bandwidth.json"
        with trio.fail_after(10):  # saved every persist_interval (0.1 s)
            while not saved_path.exists() or json.loads(
                    saved_path.read_text())["used_bytes"] < before:
                await trio.sleep(0.02)
        node.kill()  # SIGKILL: no shutdown code runs
        node.start()
        async with connect(node.host, node.port, node.node_id) as c:
            after = (await c.info())["device"]["bandwidth"]["used_bytes"]
        assert after >= before
        print(f"bandwidth used before kill -9: {before} B, after restart: {after} B")
    finally:
        node.stop()


@pytest.mark.slow
async def test_download_limit_slows_a_big_upload_from_a_client(tmp_path):
    # 2 Mbit/s = 250 kB/s down with 0.1 s bursts: 1 MB takes ~4 s however fast the client is
    node, fake = device_node(tmp_path, node=METERED_HOST,
                             bandwidth={"down_mbit": 2.0, "burst_s": 0.1,
                                        "unmetered_networks": []})
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            t0 = trio.current_time()
            for _ in range(14):
                await c.store(RECIPIENT, os.urandom(70_000))
            took = trio.current_time() - t0
            info = await c.info()
        assert 3.4 < took < 12, took
        assert info["device"]["bandwidth"]["down_bytes"] >= 14 * 70_000
        print(f"980 kB uploaded through a 2 Mbit/s limit in {took:.2f} s")
    finally:
        node.stop()
