"""RAUC's custom bootloader backend for the Pi 4/5 tryboot switch (firmware/update/tryboot.py),
driven through its command line as RAUC calls it, on a fake device tree and boot partition."""

import io
import struct

import pytest

from firmware.update import tryboot


@pytest.fixture
def pi(tmp_path):
    """A Pi 4 booted normally from slot A: autoboot.txt on the FAT partition, the firmware's
    /proc/device-tree/chosen/bootloader properties (32-bit big-endian cells)."""
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "autoboot.txt").write_text(tryboot.autoboot_txt("A"))
    dt = tmp_path / "dt/chosen/bootloader"
    dt.mkdir(parents=True)
    (tmp_path / "cmdline").write_text("console=tty1 root=PARTUUID=1234abcd-05 rauc.slot=A\n")

    def booted(partition, try_flag):
        (dt / "partition").write_bytes(struct.pack(">I", partition))
        (dt / "tryboot").write_bytes(struct.pack(">I", try_flag))

    booted(2, 0)
    b = tryboot.TrybootBackend(autoboot=str(boot / "autoboot.txt"),
                               state=str(tmp_path / "data/tryboot.json"),
                               device_tree=str(tmp_path / "dt"), cmdline=str(tmp_path / "cmdline"))
    b.booted = booted
    return b


def rauc(b, *argv):
    out = io.StringIO()
    code = tryboot.main(list(argv), backend=b, out=out)
    return code, out.getvalue().strip()


def test_autoboot_txt_is_the_documented_ab_form():
    assert tryboot.autoboot_txt("A") == ("[all]\ntryboot_a_b=1\nboot_partition=2\n"
                                         "[tryboot]\nboot_partition=3\n")
    assert tryboot.committed_slot(tryboot.autoboot_txt("B")) == "B"
    assert len(tryboot.autoboot_txt("A")) == len(tryboot.autoboot_txt("B"))  # in-place rewrite


def test_install_trial_commit(pi):
    assert rauc(pi, "get-current") == (0, "A")
    assert rauc(pi, "get-primary") == (0, "A")
    # RAUC installing into B: mark it bad first, then primary once written
    assert rauc(pi, "set-state", "B", "bad") == (0, "")
    assert rauc(pi, "get-state", "B") == (0, "bad")
    assert rauc(pi, "set-primary", "B") == (0, "")
    assert rauc(pi, "get-state", "B") == (0, "good")
    assert rauc(pi, "get-primary") == (0, "B")
    autoboot = open(pi.autoboot).read()
    assert tryboot.committed_slot(autoboot) == "A"  # not committed before a trial
    # `reboot "0 tryboot"`: the firmware starts partition 3 with the tryboot flag
    pi.booted(3, 1)
    assert rauc(pi, "get-current") == (0, "B")
    assert pi.tryboot_active()
    assert rauc(pi, "set-state", "B", "good") == (0, "")  # the health gate's mark-good
    assert tryboot.committed_slot(open(pi.autoboot).read()) == "B"
    assert rauc(pi, "get-primary") == (0, "B")


def test_failed_trial_leaves_the_committed_slot(pi):
    rauc(pi, "set-state", "B", "bad")
    rauc(pi, "set-primary", "B")
    pi.booted(3, 1)
    assert rauc(pi, "set-state", "B", "bad") == (0, "")  # the gate rolls back
    assert tryboot.committed_slot(open(pi.autoboot).read()) == "A"
    assert rauc(pi, "get-primary") == (0, "A")
    pi.booted(2, 0)  # plain reboot: the firmware's default
    assert rauc(pi, "get-current") == (0, "A")


def test_a_slot_is_only_committed_while_it_runs(pi):
    rauc(pi, "set-primary", "B")
    code, _ = rauc(pi, "set-state", "B", "good")  # still booted from A
    assert code == 1
    assert tryboot.committed_slot(open(pi.autoboot).read()) == "A"


def test_booted_slot_from_cmdline_when_the_firmware_gives_none(pi, tmp_path):
    for f in (tmp_path / "dt/chosen/bootloader").iterdir():
        f.unlink()
    assert rauc(pi, "get-current") == (0, "A")
    assert not pi.tryboot_active()


def test_usage_and_errors(pi, tmp_path):
    assert rauc(pi, "frobnicate")[0] == 2
    assert rauc(pi, "get-state", "C")[0] == 1
    (tmp_path / "boot/autoboot.txt").write_text("[all]\nboot_partition=9\n")
    assert rauc(pi, "get-primary")[0] == 1
