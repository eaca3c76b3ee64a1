"""The bootloader's view of the slots and RAUC's system.conf, on the host: U-Boot's environment
as the image writes it (mkenvimage) and RAUC reads it (fw_printenv, libubootenv), fake sysfs
trees for the boot disk."""

import subprocess

import pytest

from firmware.update import bootstate, layout, sysconf
from image import bootfiles
from tests.tools import require_tools


def test_uboot_facts_committed_trial_and_exhausted():
    f = bootstate.uboot_facts("A", {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"})
    assert (f.trial, f.primary, f.bad) == (False, "A", frozenset({"B"}))
    # RAUC installed B: primary with 2 tries; U-Boot has used one
    f = bootstate.uboot_facts("B", {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1"})
    assert (f.trial, f.primary, f.bad) == (True, "B", frozenset())
    # B never reached userspace: no attempts left, U-Boot started A
    f = bootstate.uboot_facts("A", {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"})
    assert (f.trial, f.primary, f.bad) == (False, "A", frozenset({"B"}))
    # RAUC's mark-bad removes a slot from BOOT_ORDER
    f = bootstate.uboot_facts("A", {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"})
    assert f.bad == frozenset({"B"})


def test_cmdline_values():
    cmd = "console=ttyAMA0 root=PARTUUID=ab-05 rw rauc.slot=B homenode.boot=uboot panic=10"
    assert bootstate.cmdline_value(cmd, "rauc.slot") == "B"
    assert bootstate.cmdline_value(cmd, "homenode.boot") == "uboot"
    with pytest.raises(ValueError, match="not started by the A/B boot"):
        bootstate.boot_facts("root=/dev/sda1 rw")


def test_image_env_file_reads_back_through_libubootenv(tmp_path):
    """The image's initial uboot.env (mkenvimage) in the format RAUC's fw_printenv/fw_setenv
    expect, and the U-Boot state they write read back by our parser."""
    require_tools("mkenvimage", "fw_printenv", "fw_setenv",
                  package="u-boot-tools libubootenv-tool")
    env = tmp_path / "uboot.env"
    bootfiles.uboot_env(env, bootfiles.initial_env_text())
    conf = tmp_path / "fw_env.config"
    conf.write_text(f"{env} 0x0000 {layout.UBOOT_ENV_SIZE:#x}\n")

    def run(cmd, **kw):
        return subprocess.run([cmd[0], "-c", str(conf), *cmd[1:]], **kw)

    f = bootstate.uboot_facts("A", bootstate.read_uboot_env(run))
    assert (f.trial, f.primary, f.bad) == (False, "A", frozenset({"B"}))
    # what RAUC's set-primary B does: attempts first, then the order
    run(["fw_setenv", "BOOT_B_LEFT", f"{layout.TRIAL_ATTEMPTS:x}"], check=True)
    run(["fw_setenv", "BOOT_ORDER", "B A"], check=True)
    f = bootstate.uboot_facts("B", bootstate.read_uboot_env(run))
    assert (f.trial, f.primary) == (True, "B")
    assert env.stat().st_size == layout.UBOOT_ENV_SIZE


def test_system_conf_uboot_and_tryboot():
    parts = {n: f"/dev/mmcblk0p{n}" for n in range(1, 8)}
    text = sysconf.system_conf(parts, "uboot")
    assert "bootloader=uboot" in text and "boot-attempts=3" in text
    assert "boot-attempts-primary=2" in text and "bundle-formats=-plain" in text
    assert "perform-pre-check" not in text  # the updater reads the payload itself
    assert "[slot.rootfs.1]\ndevice=/dev/mmcblk0p6\ntype=ext4\nbootname=B" in text
    assert "[slot.boot.0]\ndevice=/dev/mmcblk0p2\ntype=vfat\nparent=rootfs.0" in text
    assert "data-directory=/data/system/rauc" in text
    text = sysconf.system_conf(parts, "tryboot")
    assert "bootloader=custom" in text and "bootloader-custom-backend=" in text
    assert "boot-attempts" not in text
    with pytest.raises(ValueError, match="no partition 6"):
        sysconf.system_conf({n: f"/dev/sda{n}" for n in (1, 2, 3, 5)}, "uboot")


def fake_disk(root, disk, parts):
    blk = root / "class/block"
    devdir = root / "devices/platform/emmc" / disk
    devdir.mkdir(parents=True)
    blk.mkdir(parents=True, exist_ok=True)
    (blk / disk).symlink_to(devdir)
    for n in parts:
        name = f"{disk}p{n}" if disk[-1].isdigit() else f"{disk}{n}"
        (devdir / name).mkdir()
        (devdir / name / "partition").write_text(f"{n}\n")
        (blk / name).symlink_to(devdir / name)


def test_disk_partitions_from_sysfs(tmp_path):
    fake_disk(tmp_path, "mmcblk0", range(1, 8))
    fake_disk(tmp_path, "sda", (1, 2))
    parts = sysconf.disk_partitions("/dev/mmcblk0p5", str(tmp_path / "class/block"))
    assert parts == {n: f"/dev/mmcblk0p{n}" for n in range(1, 8)}
    assert sysconf.disk_partitions("/dev/sda1", str(tmp_path / "class/block")) == \
        {1: "/dev/sda1", 2: "/dev/sda2"}


def test_root_partition_by_partuuid(tmp_path):
    (tmp_path / "disk/by-partuuid").mkdir(parents=True)
    (tmp_path / "mmcblk0p6").touch()
    (tmp_path / "disk/by-partuuid/1234abcd-06").symlink_to(tmp_path / "mmcblk0p6")
    got = sysconf.root_partition("console=x root=PARTUUID=1234ABCD-06 rw", str(tmp_path))
    assert got == str(tmp_path / "mmcblk0p6")
    with pytest.raises(ValueError, match="expected PARTUUID"):
        sysconf.root_partition("root=LABEL=rootfs")


def test_shared_partitions_must_be_on_the_boot_disk():
    parts = {n: f"/dev/mmcblk0p{n}" for n in range(1, 8)}
    mounts = {layout.BOOTFS_MOUNT: "/dev/mmcblk0p1", layout.DATA_MOUNT: "/dev/mmcblk0p7"}
    sysconf.check_mounts(parts, mounted=mounts.get)
    mounts[layout.BOOTFS_MOUNT] = "/dev/sda1"  # a second homenode card's FAT got mounted
    with pytest.raises(ValueError, match="second homenode card"):
        sysconf.check_mounts(parts, mounted=mounts.get)
