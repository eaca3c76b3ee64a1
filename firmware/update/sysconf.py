"""RAUC's system.conf, written at every boot to /run/rauc/system.conf (RAUC looks there after
/etc/rauc, where the image puts nothing).

Why generated: the slot devices are partitions of whatever disk the system booted from (an SD
card as mmcblk0, a USB disk as sda, QEMU's vda), found from the running root; naming them by
PARTUUID or label instead would let a second card or stick holding a homenode image be taken
for this one. The bootloader backend follows how this boot was started: U-Boot (RAUC's own
`uboot` backend, its environment file on the shared FAT partition) or the Pi 4/5 firmware's
tryboot (our `custom` backend).
"""

import os
import re

from firmware.update import layout

SYSTEM_CONF = "/run/rauc/system.conf"
KEYRING = "/etc/rauc/keyring.pem"
DATA_DIRECTORY = "/data/system/rauc"
TRYBOOT_BACKEND = "/usr/lib/homenode/rauc-tryboot-backend"


def system_conf(partitions: dict[int, str], mode: str) -> str:
    """`partitions`: partition number -> device path on the boot disk."""
    missing = [n for s in layout.SLOTS for n in (s.boot_part, s.root_part) if n not in partitions]
    if missing:
        raise ValueError(f"the boot disk has no partition {missing[0]} (not an A/B homenode "
                         "card layout)")
    lines = ["# Written at boot by `homenode update config` (firmware/update/sysconf.py).",
             "[system]", f"compatible={layout.COMPATIBLE}"]
    if mode == "uboot":
        lines += ["bootloader=uboot", f"boot-attempts={layout.COMMITTED_ATTEMPTS}",
                  f"boot-attempts-primary={layout.TRIAL_ATTEMPTS}"]
    elif mode == "tryboot":
        lines += ["bootloader=custom"]
    else:
        raise ValueError(f"unknown boot mode {mode!r}")
    # a damaged or tampered payload is found before install by the updater itself
    # (rauc.verify_payload): RAUC's perform-pre-check did not run for installs with 1.13
    lines += [f"data-directory={DATA_DIRECTORY}", "bundle-formats=-plain", "",
              "[keyring]", f"path={KEYRING}", ""]
    if mode == "tryboot":
        lines += ["[handlers]", f"bootloader-custom-backend={TRYBOOT_BACKEND}", ""]
    for i, s in enumerate(layout.SLOTS):
        lines += [f"[slot.rootfs.{i}]", f"device={partitions[s.root_part]}", "type=ext4",
                  f"bootname={s.name}", "resize=true", ""]
    for i, s in enumerate(layout.SLOTS):
        lines += [f"[slot.boot.{i}]", f"device={partitions[s.boot_part]}", "type=vfat",
                  f"parent=rootfs.{i}", ""]
    return "\n".join(lines)


def root_partition(cmdline: str, dev: str = "/dev") -> str:
    """The block device of `root=` (PARTUUID=... as the boot paths write it, or a path)."""
    m = re.search(r"(?:^|\s)root=(\S+)", cmdline)
    if not m:
        raise ValueError("no root= on the kernel command line")
    spec = m.group(1)
    if spec.startswith("PARTUUID="):
        path = os.path.join(dev, "disk/by-partuuid", spec.split("=", 1)[1].lower())
    elif spec.startswith("/dev/"):
        path = spec
    else:
        raise ValueError(f"root={spec}: expected PARTUUID=... or a /dev path")
    return os.path.realpath(path)


def disk_partitions(part_dev: str, sys_block: str = "/sys/class/block") -> dict[int, str]:
    """All partitions of the disk that holds `part_dev` (e.g. /dev/mmcblk0p5 -> {1: ..., 7: ...})."""
    name = os.path.basename(part_dev)
    disk = os.path.basename(os.path.dirname(os.path.realpath(os.path.join(sys_block, name))))
    out = {}
    for child in os.listdir(os.path.join(sys_block, disk)):
        pfile = os.path.join(sys_block, disk, child, "partition")
        if os.path.exists(pfile):
            with open(pfile) as f:
                out[int(f.read().strip())] = f"/dev/{child}"
    return out


def mounted_device(path: str, sys_dev: str = "/sys/dev/block") -> str:
    """/dev/<name> of the filesystem mounted at `path`."""
    st = os.stat(path)
    link = os.path.join(sys_dev, f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    return "/dev/" + os.path.basename(os.path.realpath(link))


def check_mounts(partitions: dict[int, str], mounted=mounted_device) -> None:
    """The shared partitions in use must be this disk's: U-Boot's state file and RAUC's records
    would otherwise be written to another card or stick that holds a homenode image."""
    for number, path in ((layout.BOOTFS_PART, layout.BOOTFS_MOUNT),
                         (layout.DATA_PART, layout.DATA_MOUNT)):
        dev = mounted(path)
        if dev != partitions.get(number):
            raise ValueError(f"{path} is {dev}, not partition {number} of the boot disk "
                             f"({partitions.get(number)}): is a second homenode card or stick "
                             "plugged in? Remove it and restart")
