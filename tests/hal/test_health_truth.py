"""Health tells the truth, on real daemons: a box joined to nobody is not `healthy`, a failed
temperature sensor is shown, and under-voltage really pauses hand-off."""

import pytest
import trio
import trio.testing

from firmware.client import connect
from firmware.identity import Identity
from firmware.logs import Log
from tests.conftest import wait_info
from tests.hal.fakesys import FakeSys
from tests.hal.test_device_daemon import device_node


async def test_networking_with_no_bootstrap_needs_setup_and_says_why(tmp_path):
    node, _ = device_node(tmp_path, network={"enabled": True, "bootstrap": []})
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            info = await wait_info(c, lambda i: i["health"] != "booting", "a state")
        assert info["health"] == "needs_setup", info["health_reason"]
        assert info["health_reason"].startswith("no bootstrap configured")
        assert "[network] bootstrap" in info["health_reason"]
    finally:
        node.stop()


async def test_a_bootstrap_nobody_answers_is_connecting(tmp_path):
    nobody = Identity.generate().id_hex
    node, _ = device_node(tmp_path, network={"enabled": True, "gossip_interval": 0.2,
                                             "bootstrap": [f"127.0.0.1:9@{nobody}"]})
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            info = await wait_info(c, lambda i: i["health"] != "booting", "a state")
        assert info["health"] == "connecting"
        assert "no peer reached yet" in info["health_reason"]
    finally:
        node.stop()


async def test_a_lone_mailbox_is_healthy(tmp_path):
    node, _ = device_node(tmp_path)  # [network] enabled = false
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            info = await wait_info(c, lambda i: i["health"] != "booting", "a state")
        assert (info["health"], info["health_reason"]) == ("healthy", "")
    finally:
        node.stop()


@pytest.mark.parametrize("reading", ["garbage\n", None])
async def test_a_failed_temperature_sensor_is_shown(tmp_path, reading):
    node, fake = device_node(tmp_path)
    if reading is None:
        fake.remove("/sys/class/thermal/thermal_zone0/temp")
    else:
        fake.thermal_zone(0, reading)
    node.start()
    try:
        async with connect(node.host, node.port, node.node_id) as c:
            info = await wait_info(c, lambda i: i["health"] != "booting", "a state")
        assert info["device"]["temp_sensor_ok"] is False
        assert "temperature sensor unreadable" in info["health_reason"]
        assert info["device"]["actions"]["pause_background"] is True  # assumes warm
    finally:
        node.stop()


@pytest.fixture
def jump_clock():
    """Virtual time that jumps only after 50 ms of real idleness (SQLite and sensor reads run in
    worker threads: an instant jump would race the clock past them)."""
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_under_voltage_pauses_handoff_and_background_rounds(tmp_path, jump_clock):
    """The health monitor's actions are the ones replication reads: with the throttle flags
    saying under-voltage, a replication round neither hands off nor runs anti-entropy."""
    from firmware.node import Node
    from firmware.settings import default_schema
    from tests.conftest import write_toml

    fake = FakeSys(tmp_path / "sys").pi(temp="50000\n", throttled="0x50005\n")
    cfg = default_schema().load(write_toml(tmp_path / "homenode.toml", {
        "node": {"data_dir": str(tmp_path / "data"), "listen_port": 0},
        "hal": {"backend": "pi", "sysfs_root": str(fake.root), "vcgencmd": ""},
        "network": {"anti_entropy_interval": 10.0},
    }))
    node = Node(cfg, log=Log("error"), out=open("/dev/null", "w"))
    async with trio.open_nursery() as n:
        await n.start(node.run)
        await trio.sleep(35)  # three rounds or so
        rep = node.network.replicator.counters
        actions = node.actions.as_dict()
        n.cancel_scope.cancel()
    assert actions["pause_heavy_writes"] and actions["pause_background"]
    assert rep["handoffs_paused"] >= 2 and rep["rounds_paused"] >= 2
    assert rep["anti_entropy_rounds"] == 0 and rep["handoff_sent"] == 0
