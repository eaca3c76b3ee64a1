"""What the node sees of updates (UpdateStatus), the persistent history, and the node wiring:
the LED shows "updating" while a bundle installs or a new system is on trial."""

import json
import os

import pytest

from firmware.update.status import History, UpdateStatus, write_json


def test_missing_file_means_nothing_to_show(tmp_path):
    s = UpdateStatus(str(tmp_path / "none.json"))
    assert s.phase() is None
    assert s.info() == {"available": False}


@pytest.mark.parametrize("phase, expect", [("installing", "updating"), ("trial", "updating"),
                                           (None, None)])
def test_phase(tmp_path, phase, expect):
    path = tmp_path / "status.json"
    write_json(str(path), {"phase": phase, "slot": "B", "version": "0.2.0"})
    assert UpdateStatus(str(path)).phase() == expect


def test_info_and_rereading_after_a_change(tmp_path):
    path = tmp_path / "status.json"
    write_json(str(path), {"phase": "installing", "progress": 40, "slot": "A",
                           "version": "0.1.0", "boot": "uboot"})
    s = UpdateStatus(str(path))
    assert s.info()["progress"] == 40 and s.phase() == "updating"
    write_json(str(path), {"phase": None, "slot": "A", "version": "0.1.0", "rolled_back": True,
                           "last": {"result": "rolled_back", "version": "0.2.0",
                                    "reason": "the node restarted"}})
    os.utime(path, ns=(1, 2))  # a new mtime even on coarse clocks
    info = s.info()
    assert s.phase() is None
    assert info["rolled_back"] and info["last_result"] == "rolled_back"
    assert info["last_reason"] == "the node restarted"


def test_garbage_file_is_reported_not_fatal(tmp_path):
    path = tmp_path / "status.json"
    path.write_text("{not json")
    s = UpdateStatus(str(path))
    assert s.phase() is None
    assert s.info()["available"] is True


def test_history_pending_events_declined(tmp_path):
    path = str(tmp_path / "sys/update/history.json")
    h = History(path, clock=lambda: 1000)
    with h.change():
        h.set_pending({"slot": "B", "version": "0.2.0"})
        for i in range(30):
            h.event("refused", f"0.{i}", "bad signature")
        h.decline("k1")
    again = History(path)
    assert again.pending == {"slot": "B", "version": "0.2.0"}
    assert len(again.data["events"]) == 20 and again.last["version"] == "0.29"
    assert again.declined("k1") and not again.declined("k2")
    with again.change():
        again.set_pending(None)
    assert History(path).pending is None
    assert json.loads(open(path).read())["events"][0]["time"] == 1000


async def test_device_led_shows_updating_from_the_status_file(tmp_path):
    """The node takes the update state through constructor arguments (`update_phase`,
    `update_info`, from one UpdateStatus): its phase drives the health state and the LED, and
    `info` carries the update summary for `homenode status` and the page."""
    import io

    from firmware.logs import Log
    from firmware.node import Node
    from firmware.settings import default_schema
    from tests.conftest import write_toml
    from tests.hal.fakesys import FakeSys

    fake = FakeSys(tmp_path / "sysroot").pi()
    cfg = default_schema().load(str(write_toml(tmp_path / "homenode.toml", {
        "node": {"data_dir": str(tmp_path / "data"), "listen_port": 0},
        "network": {"enabled": False},
        "hal": {"backend": "pi", "sysfs_root": str(fake.root), "vcgencmd": ""}})))
    status = tmp_path / "status.json"
    updates = UpdateStatus(str(status))
    node = Node(cfg, log=Log("debug", stream=io.StringIO()), out=io.StringIO(),
                update_phase=updates.health_phase, update_info=updates.info)
    health = node.device.health
    try:
        node.state = "serving"
        await health.tick()
        assert health.state != "updating" and node._status()["update"] == {"available": False}
        write_json(str(status), {"phase": "trial", "slot": "B", "version": "0.2.0"})
        await health.tick()
        assert (health.state, health.reason) == updates.health_phase()
        assert health.reason.startswith("running a new system on trial")
        assert node.device.leds.animator.state == "updating"
        assert node._status()["update"]["slot"] == "B"
        write_json(str(status), {"phase": None, "slot": "B", "version": "0.2.0"})
        os.utime(status, ns=(5, 6))
        await health.tick()
        assert health.state != "updating"
    finally:
        node.store.close()
