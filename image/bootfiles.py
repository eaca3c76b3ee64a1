"""The boot files: the shared FAT partition (bootfs) and one slot's boot partition.

Who reads what:
  Pi 4 / 400 / CM4 / 5   EEPROM bootloader -> bootfs/autoboot.txt -> slot partition 2 or 3
                         (3 only in tryboot mode until committed) -> its config.txt, start4.elf
                         (Pi 4), kernel, initrd, DTB, cmdline.txt
  Pi 3 / Zero 2 W        bootcode.bin + start.elf + config.txt on bootfs -> u-boot.bin ->
                         boot.scr (slot from homenode-ab.env) -> kernel, initrd, DTB from the slot
  QEMU -M virt           u-boot-qemu (-bios) -> boot.scr as above, QEMU's device tree

A slot's boot files come from its own root filesystem (kernel, initrd, Debian's DTBs and the
raspi-firmware blobs), so a bundle carries matching kernel, modules and DTBs. bootfs is written
once by the image and never by an update (U-Boot, its script and the Pi 3 firmware stay).
"""

import os
import shutil
import subprocess
from pathlib import Path

from firmware.update import layout

HERE = Path(__file__).resolve().parent
BOOT_CMD = HERE / "boot" / "boot.cmd"
HOMENODE_TOML = HERE / "boot" / "homenode.toml"
FIRMWARE = "usr/lib/raspi-firmware"
UBOOT_RPI = "usr/lib/u-boot/rpi_arm64/u-boot.bin"

# DTBs the Pi firmware hands to U-Boot on bootfs (U-Boot's own device tree on a Pi 3 / Zero 2 W,
# and a Pi 4 whose bootloader predates autoboot.txt)
UBOOT_BOARD_DTBS = ("bcm2837-*.dtb", "bcm2711-*.dtb")

SLOT_CONFIG_TXT = """\
# homenode boot slot: read by the firmware of a Raspberry Pi 4 / 400 / CM4 / 5 from the
# partition that autoboot.txt on the first partition selects (written by the image or a bundle).
[all]
arm_64bit=1
enable_uart=1
upstream_kernel=1
kernel=vmlinuz
initramfs initrd.img followkernel
cmdline=cmdline.txt
"""

BOOTFS_CONFIG_TXT = """\
# homenode: a Raspberry Pi 3 / Zero 2 W (and a Pi 4 whose bootloader ignores autoboot.txt)
# starts U-Boot, whose boot.scr picks slot A or B (see homenode-ab.env). Pi 4/5 with a current
# bootloader read autoboot.txt instead and never use this file.
[all]
arm_64bit=1
enable_uart=1
upstream_kernel=1
kernel=u-boot.bin
"""

CMDLINE_TEMPLATE = ("console=tty1 console=serial0,115200 root=PARTUUID=@PARTUUID@ "
                    "rootfstype=ext4 rw rootwait fsck.repair=yes net.ifnames=0 panic=10 audit=0 "
                    "rauc.slot=@SLOT@ homenode.boot=tryboot\n")


def slot_cmdline(partuuid: str, slot: str) -> str:
    return CMDLINE_TEMPLATE.replace("@PARTUUID@", partuuid).replace("@SLOT@", slot)


def kernel_files(root: Path) -> tuple[Path, Path, Path]:
    """(vmlinuz, initrd, DTB directory) of the newest kernel in the tree."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SystemExit(f"image: no kernel in {root}/boot")
    kver = kernels[-1].name[len("vmlinuz-"):]
    initrd = root / "boot" / f"initrd.img-{kver}"
    dtbs = root / "usr/lib" / f"linux-image-{kver}" / "broadcom"
    for p in (initrd, dtbs):
        if not p.exists():
            raise SystemExit(f"image: {p} missing for kernel {kver}")
    return kernels[-1], initrd, dtbs


def slot_boot_tree(root: Path, dest: Path) -> None:
    """One slot's boot partition contents (cmdline.txt comes from cmdline.txt.in at install)."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "broadcom").mkdir(parents=True)
    vmlinuz, initrd, dtbs = kernel_files(root)
    shutil.copy2(vmlinuz, dest / "vmlinuz")
    shutil.copy2(initrd, dest / "initrd.img")
    for dtb in sorted(dtbs.glob("bcm*.dtb")):
        shutil.copy2(dtb, dest / dtb.name)  # where the Pi firmware looks
        shutil.copy2(dtb, dest / "broadcom" / dtb.name)  # U-Boot's ${fdtfile}
    fw = root / FIRMWARE
    for name in ("start4.elf", "fixup4.dat"):
        shutil.copy2(fw / name, dest / name)
    if (fw / "overlays").is_dir():
        shutil.copytree(fw / "overlays", dest / "overlays")
    (dest / "config.txt").write_text(SLOT_CONFIG_TXT)
    (dest / "cmdline.txt.in").write_text(CMDLINE_TEMPLATE)


def uboot_env(path: Path, text: str) -> None:
    subprocess.run(["mkenvimage", "-s", str(layout.UBOOT_ENV_SIZE), "-o", str(path), "-"],
                   input=text.encode(), check=True)


def initial_env_text() -> str:
    """Slot A committed, slot B empty (not bootable until an update fills it)."""
    a, b = layout.SLOTS
    return (f"BOOT_ORDER={a.name} {b.name}\nBOOT_{a.name}_LEFT={layout.COMMITTED_ATTEMPTS:x}\n"
            f"BOOT_{b.name}_LEFT=0\n")


def boot_script(dest: Path, epoch: int) -> None:
    subprocess.run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none",
                    "-n", "homenode A/B boot", "-d", str(BOOT_CMD), str(dest)], check=True,
                   capture_output=True, env=dict(os.environ, SOURCE_DATE_EPOCH=str(epoch)))


def autoboot_txt() -> str:
    from firmware.update.tryboot import autoboot_txt as text

    return text(layout.SLOTS[0].name)


def bootfs_tree(root: Path, dest: Path, epoch: int) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    fw = root / FIRMWARE
    for name in ("bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat"):
        shutil.copy2(fw / name, dest / name)
    _, _, dtbs = kernel_files(root)
    for pattern in UBOOT_BOARD_DTBS:
        for dtb in sorted(dtbs.glob(pattern)):
            shutil.copy2(dtb, dest / dtb.name)
    shutil.copy2(root / UBOOT_RPI, dest / "u-boot.bin")
    (dest / "config.txt").write_text(BOOTFS_CONFIG_TXT)
    (dest / "autoboot.txt").write_text(autoboot_txt())
    boot_script(dest / "boot.scr", epoch)
    uboot_env(dest / layout.UBOOT_ENV_FILE, initial_env_text())
    shutil.copy2(HOMENODE_TOML, dest / "homenode.toml")


def bundle_hook() -> str:
    """RAUC bundle hook: point the freshly written boot slot's cmdline.txt (what the Pi 4/5
    firmware passes in tryboot mode) at the root partition of the same slot."""
    cases = "\n".join(f"        {s.boot_part}) root_num={s.root_part} ;;" for s in layout.SLOTS)
    return f"""#!/bin/sh
# homenode bundle hook (generated by image/bootfiles.py)
set -e
case "$1" in
slot-post-install)
    [ "$RAUC_SLOT_CLASS" = boot ] || exit 0
    dev="$RAUC_SLOT_DEVICE"
    num="${{dev##*[!0-9]}}"
    case "$num" in
{cases}
        *) echo "boot slot $dev is not a known boot partition" >&2; exit 1 ;;
    esac
    root="${{dev%"$num"}}$root_num"
    uuid=$(blkid -s PARTUUID -o value "$root")
    [ -n "$uuid" ] || {{ echo "no PARTUUID for $root" >&2; exit 1; }}
    sed -e "s/@PARTUUID@/$uuid/" -e "s/@SLOT@/$RAUC_SLOT_BOOTNAME/" \\
        "$RAUC_SLOT_MOUNT_POINT/cmdline.txt.in" > "$RAUC_SLOT_MOUNT_POINT/cmdline.txt"
    sync
    ;;
esac
"""
