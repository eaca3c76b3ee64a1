"""CPython backends against fake sysfs trees: detection, sensors, throttle flags, disk, net."""

import collections
import logging
import os
import stat

import psutil
import pytest

from hal.backends.disk import BlockStats, DiskSpace, disk_of, find_block_device
from hal.backends.factory import ENV_VAR, choose_backend, open_hardware, pi_model
from hal.backends.netio import CrossCheck, NetCounters
from hal.backends.sensors import ThermalSensor, ThrottleReader
from hal.backends.sysfs import Complaints, SysRoot
from hal.core.thermal import ThermalGovernor
from tests.hal.fakesys import FakeSys


@pytest.fixture
def fake(tmp_path):
    return FakeSys(tmp_path / "root")


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- backend choice --------------------------------------------------------------------------

def test_auto_detects_a_pi_from_the_device_tree_model(fake):
    fake.model()
    root = SysRoot(fake.root)
    assert pi_model(root) == "Raspberry Pi 4 Model B Rev 1.4"
    assert choose_backend("auto", root, env={}) == ("pi", "detected Raspberry Pi 4 Model B Rev 1.4")


def test_auto_falls_back_to_sim_with_exactly_one_log_line(fake, caplog, tmp_path):
    fake.model("QEMU KVM Virtual Machine\x00")
    caplog.set_level(logging.INFO, logger="hal")
    hw = open_hardware("auto", sysfs_root=fake.root, env={}, data_dir=str(tmp_path))
    assert hw.kind == "sim"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "simulated" in lines[0] and ENV_VAR in lines[0], lines
    hw.close()


def test_env_var_overrides_the_setting_and_bad_values_say_what_is_allowed(fake):
    fake.model()
    root = SysRoot(fake.root)
    assert choose_backend("pi", root, env={ENV_VAR: "sim"})[0] == "sim"
    assert choose_backend("sim", root, env={})[0] == "sim"
    with pytest.raises(ValueError, match=r"HOMENODE_HAL_BACKEND = 'gpio' .* auto, pi, sim"):
        choose_backend("auto", root, env={ENV_VAR: "gpio"})
    with pytest.raises(ValueError, match=r"\[hal\] backend = 'real'"):
        choose_backend("real", root, env={})


def test_pi_backend_opens_everything_from_the_fake_tree(fake, tmp_path):
    fake.pi(temp="51234\n", throttled="50005\n")
    hw = open_hardware("auto", sysfs_root=fake.root, env={}, data_dir=str(tmp_path),
                       vcgencmd=None)
    assert hw.kind == "pi" and hw.model.startswith("Raspberry Pi 4")
    assert hw.thermal.read_mc() == 51234
    assert hw.throttle.read() == 0x50005
    d = hw.describe()
    assert d["leds"] == ["SysfsLed:ACT", "SysfsLed:PWR"]
    assert d["thermal"] == "/sys/class/thermal/thermal_zone0/temp"
    assert d["throttle"] == "/sys/devices/platform/soc/soc:firmware/get_throttled"
    hw.close()


def test_pi_backend_without_gpio_library_keeps_going(fake, tmp_path, caplog):
    """A configured pin whose GPIO library is missing is one log line, not a crash."""
    fake.pi()

    class NoFactory:
        def __getattr__(self, name):
            raise RuntimeError("no GPIO library on this machine")

    hw = open_hardware("pi", sysfs_root=fake.root, env={}, data_dir=str(tmp_path),
                       led_pin=18, pin_factory=NoFactory(), vcgencmd=None)
    assert [type(x).__name__ for x in hw.leds.all()] == ["SysfsLed", "SysfsLed"]
    msgs = warnings(caplog)
    assert len(msgs) == 1 and "LED on GPIO18" in msgs[0] and "continuing without it" in msgs[0]
    hw.close()


# --- temperature -----------------------------------------------------------------------------

def sensor(fake, caplog):
    caplog.set_level(logging.INFO, logger="hal")
    return ThermalSensor(SysRoot(fake.root), Complaints(logging.getLogger("hal")), psutil_module=None)


def test_prefers_the_cpu_zone(fake, caplog):
    fake.thermal_zone(0, "99000\n", zone_type="battery")
    fake.thermal_zone(1, "47000\n", zone_type="cpu-thermal")
    assert sensor(fake, caplog).read_mc() == 47000


@pytest.mark.parametrize("content, problem", [
    (None, "no temperature sensor found"),
    ("garbage\n", "not an integer"),
    ("-5000\n", "outside the plausible"),
    ("200000\n", "outside the plausible"),
    ("", "not an integer"),
])
def test_bad_sensor_input_is_safe_and_logged_once(fake, caplog, content, problem):
    fake.thermal_zone(0, content)
    s = sensor(fake, caplog)
    gov = ThermalGovernor()
    tiers = set()
    for i in range(5):
        tiers.add(gov.update(s.read_mc(), i * 1000))
    assert tiers == {"warm"}
    msgs = warnings(caplog)
    assert len(msgs) == 1 and problem in msgs[0], msgs
    # recovery: one info line, governor back to normal
    fake.thermal_zone(0, "50000\n")
    for i in range(3):
        gov.update(s.read_mc(), 10000 + i * 1000)
    assert gov.tier == "normal"
    if content is not None:
        assert sum("sane values again" in r.getMessage() for r in caplog.records) == 1


def test_psutil_fallback_when_no_thermal_zone(fake, caplog):
    Temp = collections.namedtuple("shwtemp", "label current high critical")

    class SensorsOnly:  # the shape psutil returns (name -> [shwtemp(label, current, ...)])
        @staticmethod
        def sensors_temperatures():
            return {"cpu_thermal": [Temp("", 55.5, None, None)]}

    s = ThermalSensor(SysRoot(fake.root), Complaints(), psutil_module=SensorsOnly)
    assert s.read_mc() == 55500 and s.source == "psutil:cpu_thermal"


# --- throttle flags --------------------------------------------------------------------------

def fake_vcgencmd(tmp_path, output, rc=0):
    p = tmp_path / "vcgencmd"
    p.write_text(f"#!/bin/sh\n[ \"$1\" = get_throttled ] || exit 9\necho '{output}'\nexit {rc}\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_throttle_flags_from_sysfs_then_vcgencmd(fake, tmp_path, caplog):
    fake.throttled("80008\n")
    r = ThrottleReader(SysRoot(fake.root), Complaints(), vcgencmd=fake_vcgencmd(tmp_path, "x"))
    assert r.read() == 0x80008 and r.source.endswith("soc:firmware/get_throttled")
    fake.throttled("not hex\n")
    r.vcgencmd = fake_vcgencmd(tmp_path, "throttled=0x50005")
    assert r.read() == 0x50005 and r.source == r.vcgencmd


@pytest.mark.parametrize("setup", ["missing", "garbage", "vcgencmd_fails"])
def test_unreadable_throttle_flags_are_none_and_logged_once(fake, tmp_path, caplog, setup):
    caplog.set_level(logging.INFO, logger="hal")
    vc = str(tmp_path / "no-such-vcgencmd")
    if setup == "garbage":
        fake.throttled("throttled=banana\n")
    if setup == "vcgencmd_fails":
        vc = fake_vcgencmd(tmp_path, "error=1 error_msg=\"Command not registered\"", rc=255)
    r = ThrottleReader(SysRoot(fake.root), Complaints(logging.getLogger("hal")), vcgencmd=vc)
    assert [r.read() for _ in range(4)] == [None] * 4
    msgs = warnings(caplog)
    assert len(msgs) == 1 and "throttle flags unreadable" in msgs[0], msgs


# --- disk and net ----------------------------------------------------------------------------

def test_sectors_written_from_block_stat(fake):
    fake.block("mmcblk0", 123456, partition="mmcblk0p2")
    root = SysRoot(fake.root)
    assert disk_of(root, 179, 2) == "mmcblk0"          # partition -> whole card
    bs = BlockStats(root, "mmcblk0", Complaints())
    assert bs.written_bytes() == 123456 * 512
    fake.write("/sys/block/mmcblk0/stat", "1 2 3\n")
    assert bs.written_bytes() is None


def test_find_block_device_of_a_real_path(fake, tmp_path):
    st = os.stat(tmp_path)
    fake.block("sdz", 10, major=os.major(st.st_dev), minor=os.minor(st.st_dev))
    assert find_block_device(SysRoot(fake.root), str(tmp_path)) == "sdz"
    assert find_block_device(SysRoot(fake.root), str(tmp_path / "missing")) is None


def test_free_space_is_real_statvfs_and_missing_dir_is_none(tmp_path, caplog):
    free = DiskSpace(str(tmp_path), Complaints()).free_bytes()
    assert free == psutil.disk_usage(str(tmp_path)).free or abs(
        free - psutil.disk_usage(str(tmp_path)).free) < 64 * 1024 * 1024
    assert DiskSpace(str(tmp_path / "gone"), Complaints()).free_bytes() is None


def test_net_counters_and_cross_check():
    totals = NetCounters(psutil, Complaints()).totals()
    assert totals is not None and totals[0] >= 0 and totals[1] >= 0
    cc = CrossCheck()
    assert cc.update(1000, 5000) is None
    assert cc.update(2000, 6100) == pytest.approx(1.1)
    assert cc.update(2000, 6200) is None  # node sent nothing: no ratio


def test_sysroot_never_raises(tmp_path):
    root = SysRoot(tmp_path)
    assert root.read_text("/nope") is None
    assert root.write_text("/nope/x", "1") is False
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    assert root.read_text("/bin") is None
