"""The button on a real in-process Node: gpiozero MockFactory pins, fake sysfs, MockClock.

Holds of 3 and 10 s take little real time: a MockClock jumps ahead once every task has been
waiting for 20 ms of real time, and the button logic only ever reads trio's clock. (A zero
threshold would race the clock through hours while a real process or SQLite thread works.)
The shutdown command is a real process that leaves a marker file.
"""

import io
import os
import shlex
import sys

import pytest
import trio
import trio.testing

from firmware.exit_status import EXIT_POWEROFF, EXIT_RESTART
from firmware.identity import NODE_KEY_FILE
from firmware.logs import Log
from firmware.node import Node
from firmware.settings import default_schema
from hal.core import led
from tests.conftest import write_toml
from tests.hal.fakesys import FakeSys

BUTTON = 3
RGB = (17, 27, 22)


@pytest.fixture
def jump_clock():
    return trio.testing.MockClock(autojump_threshold=0.02)


class Box:
    """A node on a fake Pi with a button and an RGB LED."""

    def __init__(self, tmp_path, factory, shutdown_command=None):
        self.fake = FakeSys(tmp_path / "sysroot").pi()
        self.marker = tmp_path / "powered-off"
        cmd = shlex.join([sys.executable, "-c",
                          f"open({str(self.marker)!r}, 'w').write('poweroff')"])
        if shutdown_command is not None:
            cmd = shutdown_command
        cfg_path = write_toml(tmp_path / "homenode.toml", {
            "node": {"data_dir": str(tmp_path / "data"), "listen_port": 0},
            "network": {"enabled": False},
            "hal": {"backend": "pi", "sysfs_root": str(self.fake.root), "button_pin": BUTTON,
                    "rgb_pins": list(RGB), "vcgencmd": "", "shutdown_command": cmd,
                    "poll_interval": 1.0},
        })
        self.logs = io.StringIO()
        self.update = None  # what the update tooling would report: (phase, reason) or None
        self.node = Node(default_schema().load(cfg_path), log=Log("debug", stream=self.logs),
                         out=io.StringIO(), pin_factory=factory,
                         update_phase=lambda: self.update)
        self.stops = []
        self.stopped = trio.Event()
        self.pin = factory.pin(BUTTON)
        self.rgb = [factory.pin(p) for p in RGB]
        self.data_dir = self.node.data_dir

    async def run_node(self, *, task_status=trio.TASK_STATUS_IGNORED):
        """The node until it stops itself (safe shutdown, factory reset)."""
        await self.node.run(task_status=task_status)
        self.stops.append(trio.current_time())
        self.stopped.set()

    async def wait_stopped(self):
        with trio.fail_after(120):
            await self.stopped.wait()

    async def hold(self, seconds):
        self.pin.drive_low()
        await trio.sleep(seconds)
        self.pin.drive_high()
        await trio.sleep(0.05)

    def events(self):
        return self.node.device.button.events

    def act(self):
        return self.fake.read("/sys/class/leds/ACT/brightness").strip()


async def start(box, nursery):
    await nursery.start(box.run_node)
    await trio.sleep(0.5)


async def test_short_press_blinks_identify(tmp_path, mock_pins, jump_clock):
    box = Box(tmp_path, mock_pins)
    async with trio.open_nursery() as n:
        await start(box, n)
        await box.hold(0.3)
        assert box.events() == ["short_press"]
        anim = box.node.device.leds.animator
        assert anim.overlay(int(trio.current_time() * 1000)) == "identify"
        seen = set()
        for _ in range(20):  # the identify rhythm (80/80 ms) on the sysfs ACT LED
            await trio.sleep(0.04)
            seen.add(box.act())
        assert seen == {"0", "255"}
        await trio.sleep(5)
        assert anim.overlay(int(trio.current_time() * 1000)) is None
        assert box.stops == []
        n.cancel_scope.cancel()


async def test_hold_three_seconds_shuts_down_safely(tmp_path, mock_pins, jump_clock):
    box = Box(tmp_path, mock_pins)
    async with trio.open_nursery() as n:
        await start(box, n)
        box.pin.drive_low()
        await trio.sleep(3.2)
        assert box.events() == ["hold_shutdown"]  # LED acknowledges before release
        assert box.node.device.leds.animator.overlay(int(trio.current_time() * 1000)) == \
            "hold_ack"
        box.pin.drive_high()
        await box.wait_stopped()
        assert box.events() == ["hold_shutdown", "shutdown"]
        assert box.marker.read_text() == "poweroff"  # the configured command really ran
        assert box.node.exit_status == 0  # the command did the power-off: a plain exit
        assert box.node.device.health.state == "safe_to_unplug"
        # LEDs show safe_to_unplug: ACT steady on, PWR off, RGB steady green
        await trio.sleep(2)
        assert box.act() == "255"
        assert box.fake.read("/sys/class/leds/PWR/brightness").strip() == "0"
        assert [p.state for p in box.rgb] == [0, 1, 0]
        assert os.path.exists(os.path.join(box.data_dir, NODE_KEY_FILE))  # nothing wiped
        n.cancel_scope.cancel()
    assert "safe_shutdown" in box.logs.getvalue()
    assert "shutdown_command" in box.logs.getvalue() and "rc=0" in box.logs.getvalue()
    # stopped with "safe to unplug": the LEDs are left lit (not closed) for the operator
    assert box.fake.read("/sys/class/leds/ACT/trigger") == "none"


async def test_factory_reset_needs_confirmation(tmp_path, mock_pins, jump_clock):
    box = Box(tmp_path, mock_pins)
    async with trio.open_nursery() as n:
        await start(box, n)
        key = os.path.join(box.data_dir, NODE_KEY_FILE)
        await box.hold(10.5)
        assert box.events() == ["hold_shutdown", "hold_reset", "reset_armed"]
        assert os.path.exists(key)  # armed only: nothing wiped yet
        assert box.node.device.leds.animator.overlay(int(trio.current_time() * 1000)) == \
            "reset_armed"
        assert box.fake.read("/sys/class/leds/PWR/brightness").strip() == "255"
        await trio.sleep(2)
        await box.hold(0.2)  # the confirming press
        await box.wait_stopped()
        assert box.events()[-1] == "factory_reset"
        assert os.listdir(box.data_dir) == []
        assert box.node.exit_status == EXIT_RESTART  # systemd starts it afresh
        n.cancel_scope.cancel()
    assert "factory_reset_done" in box.logs.getvalue()


async def test_hold_with_auto_command_asks_systemd_to_power_off(tmp_path, mock_pins,
                                                                 jump_clock):
    # The unprivileged node cannot power off: on a Pi "auto" exits with EXIT_POWEROFF and the
    # unit's privileged ExecStopPost does it (image/overlay/usr/lib/homenode/after-stop).
    box = Box(tmp_path, mock_pins, shutdown_command="auto")
    async with trio.open_nursery() as n:
        await start(box, n)
        await box.hold(3.2)
        await box.wait_stopped()
        assert box.events() == ["hold_shutdown", "shutdown"]
        assert box.node.exit_status == EXIT_POWEROFF
        assert box.node.device.health.state == "safe_to_unplug"
        assert not box.marker.exists()
        n.cancel_scope.cancel()
    assert "shutdown_command" not in box.logs.getvalue()


async def test_factory_reset_without_confirmation_is_cancelled(tmp_path, mock_pins,
                                                               jump_clock):
    box = Box(tmp_path, mock_pins)
    async with trio.open_nursery() as n:
        await start(box, n)
        await box.hold(11)
        await trio.sleep(16)  # confirmation window (15 s) passes
        assert box.events() == ["hold_shutdown", "hold_reset", "reset_armed", "reset_cancelled"]
        await box.hold(0.2)  # a later press is just identify
        assert box.events()[-1] == "short_press"
        assert os.path.exists(os.path.join(box.data_dir, NODE_KEY_FILE))
        assert box.stops == []
        n.cancel_scope.cancel()


async def test_health_state_drives_every_led(tmp_path, mock_pins, jump_clock):
    """The health monitor's state reaches the sysfs and GPIO LEDs as the table says."""
    box = Box(tmp_path, mock_pins)
    async with trio.open_nursery() as n:
        await start(box, n)
        await trio.sleep(1.5)
        assert box.node.device.health.state == "healthy"
        box.fake.throttled("50005\n")  # under-voltage now
        await trio.sleep(1.5)
        assert box.node.device.health.state == "under_voltage"
        assert box.fake.read("/sys/class/leds/PWR/brightness").strip() == "255"
        pattern = led.state_pattern("under_voltage")
        red = box.rgb[0]
        red.clear_states()
        await trio.sleep(pattern.period_ms / 1000 * 2)
        levels = [s.state for s in red.states[1:]]
        assert levels[:8] == [0.0, 1.0] * 4 or levels[:8] == [1.0, 0.0] * 4, levels
        assert box.node.device.info()["health_reason"].startswith("power supply under-voltage")
        box.update = ("updating", "installing an update")  # outranks the power warning
        await trio.sleep(1.5)
        assert box.node.device.health.state == "updating"
        box.node.device.health.fatal("store corrupt")
        await trio.sleep(1.5)
        assert box.node.device.info()["health"] == "fatal_error"
        assert box.node.device.info()["health_reason"] == "store corrupt"
        assert "device_state state=fatal_error" in box.logs.getvalue()
        n.cancel_scope.cancel()
