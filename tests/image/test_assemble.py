"""Disk and slot assembly without loop devices (image/assemble.py, image/bootfiles.py) on a tiny
tree, with the real tools: mkfs.vfat + mtools, mkfs.ext4 -d, resize2fs, sfdisk on a file,
mkimage/mkenvimage, dd into the sparse image; then checked with sfdisk, mtools, e2fsck, debugfs,
dumpimage and fw_printenv. No emulation, a few seconds."""

import hashlib
import shutil
import subprocess

import pytest

from firmware.update import layout as slots
from image import assemble, bootfiles
from image.progress import Progress
from qemu.harness import extract_partition, fat_files, fat_read, partitions
from tests.tools import require_tools

TOOLS = ("mkfs.vfat", "mcopy", "mdir", "mkfs.ext4", "sfdisk", "e2fsck", "debugfs", "resize2fs",
         "mkimage", "mkenvimage", "dumpimage", "fw_printenv")
SMALL = assemble.Layout(bootfs_mib=64, boot_slot_mib=64, root_slot_mib=128, data_mib=32)
KVER = "6.12.99+deb13-arm64"
EPOCH = 1_700_000_000


@pytest.fixture(autouse=True)
def _tools():
    require_tools(*TOOLS, package="dosfstools mtools e2fsprogs fdisk u-boot-tools libubootenv-tool")


@pytest.fixture
def tree(tmp_path):
    """A root tree with what the boot files are made from: kernel, initrd, DTBs, Pi firmware,
    U-Boot (contents are placeholders)."""
    root = tmp_path / "root"
    for d in ("etc", "boot/firmware", "var/lib/homenode", f"usr/lib/linux-image-{KVER}/broadcom",
              "usr/lib/raspi-firmware/overlays", "usr/lib/u-boot/rpi_arm64"):
        (root / d).mkdir(parents=True)
    (root / "etc/hostname").write_text("homenode\n")
    (root / "etc/group").write_text("root:x:0:\nsystemd-journal:x:999:\n")
    (root / "boot/firmware/config.txt").write_text("left by raspi-firmware\n")
    (root / f"boot/vmlinuz-{KVER}").write_bytes(b"ARM64 kernel" * 1000)
    (root / f"boot/initrd.img-{KVER}").write_bytes(b"initrd" * 1000)
    for dtb in ("bcm2837-rpi-3-b.dtb", "bcm2837-rpi-zero-2-w.dtb", "bcm2711-rpi-4-b.dtb",
                "bcm2712-rpi-5-b.dtb"):
        (root / f"usr/lib/linux-image-{KVER}/broadcom" / dtb).write_bytes(b"\xd0\x0d\xfe\xed")
    fw = root / "usr/lib/raspi-firmware"
    for name in ("bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat"):
        (fw / name).write_bytes(name.encode())
    (fw / "overlays/x.dtbo").write_bytes(b"\xd0\x0d" * 100)
    (root / bootfiles.UBOOT_RPI).write_bytes(b"u-boot")
    return root


def build(tree, tmp_path, name="disk.img"):
    work = tmp_path / f"work-{name}"
    work.mkdir()
    img = tmp_path / name
    lay = assemble.assemble(tree, work, img, tmp_path / f"slots-{name}", "999:998", EPOCH,
                            Progress(1, out=open("/dev/null", "w")), layout=SMALL)
    return img, lay


def test_ab_image_partitions_and_contents(tree, tmp_path):
    img, lay = build(tree, tmp_path)
    assert img.stat().st_size == lay.total_mib << 20
    assert img.stat().st_blocks * 512 < img.stat().st_size // 2  # sparse: slot B is empty
    parts = partitions(img)
    assert [p["type"] for p in parts] == ["c", "c", "c", "5", "83", "83", "83"]
    assert parts[0]["start"] == 8192 and parts[0].get("bootable") is True
    assert parts[6]["size"] == SMALL.data_mib * 2048
    # bootfs: the Pi 3 / U-Boot chain, the Pi 4/5 A/B switch, the owner's settings
    names = set(fat_files(img))
    assert {"bootcode.bin", "start.elf", "u-boot.bin", "boot.scr", "homenode-ab.env", "autoboot.txt",
            "config.txt", "homenode.toml", "bcm2837-rpi-3-b.dtb", "bcm2837-rpi-zero-2-w.dtb",
            "bcm2711-rpi-4-b.dtb"} <= names
    assert "vmlinuz" not in names  # kernels live in the slots
    assert fat_read(img, "autoboot.txt") == (b"[all]\ntryboot_a_b=1\nboot_partition=2\n"
                                             b"[tryboot]\nboot_partition=3\n")
    assert b"kernel=u-boot.bin" in fat_read(img, "config.txt")
    script = tmp_path / "boot.scr"
    script.write_bytes(fat_read(img, "boot.scr"))
    listing = subprocess.run(["dumpimage", "-l", str(script)], capture_output=True, text=True)
    assert "Script" in listing.stdout
    # slot A boot partition: what the Pi 4/5 firmware and U-Boot load
    slot_a = tmp_path / "p2.vfat"
    extract_partition(img, 2, slot_a)
    a_names = set(fat_files_of(slot_a))
    assert {"vmlinuz", "initrd.img", "config.txt", "cmdline.txt", "cmdline.txt.in", "start4.elf",
            "fixup4.dat", "bcm2712-rpi-5-b.dtb", "bcm2711-rpi-4-b.dtb", "broadcom",
            "overlays"} <= a_names
    cmdline = fat_read_of(slot_a, "cmdline.txt").decode()
    assert f"root=PARTUUID={assemble.disk_id(EPOCH):08x}-05 " in cmdline
    assert "rauc.slot=A homenode.boot=tryboot" in cmdline
    assert b"kernel=vmlinuz" in fat_read_of(slot_a, "config.txt")
    # roots and data: clean ext4, slot A grown to its slot, B empty
    for n, label in ((5, "rootfs"), (7, "hndata")):
        part = extract_partition(img, n, tmp_path / f"p{n}")
        fsck = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        out = subprocess.run(["dumpe2fs", "-h", str(part)], capture_output=True, text=True)
        assert f"Filesystem volume name:   {label}" in out.stdout
    p5 = tmp_path / "p5"
    cat = subprocess.run(["debugfs", "-R", "cat /etc/hostname", str(p5)], capture_output=True,
                         text=True)
    assert cat.stdout == "homenode\n"
    boot_ls = subprocess.run(["debugfs", "-R", "ls /boot", str(p5)], capture_output=True,
                             text=True).stdout
    assert "vmlinuz" not in boot_ls  # moved to the boot slot
    ls = subprocess.run(["debugfs", "-R", "ls /boot/firmware", str(p5)], capture_output=True,
                        text=True)
    assert "config.txt" not in ls.stdout  # the bootfs mount point stays empty
    blocks = subprocess.run(["dumpe2fs", "-h", str(p5)], capture_output=True, text=True).stdout
    count = int(next(ln.split()[-1] for ln in blocks.splitlines()
                     if ln.startswith("Block count:")))
    assert count * 4096 == SMALL.root_slot_mib << 20  # grown to the slot, as RAUC's resize=true
    data = tmp_path / "p7"
    st = subprocess.run(["debugfs", "-R", "stat /homenode", str(data)], capture_output=True,
                        text=True).stdout
    assert "User:   999   Group:   998" in st
    ls = subprocess.run(["debugfs", "-R", "ls -l /system", str(data)], capture_output=True,
                        text=True).stdout
    for d in ("ssh", "rauc", "update", "journal"):
        assert d in ls
    # slot B is empty until an update writes it
    with open(img, "rb") as f:
        f.seek(parts[5]["start"] * 512)
        assert f.read(1 << 20) == bytes(1 << 20)


def fat_files_of(vfat):
    import os
    out = subprocess.run(["mdir", "-b", "-i", str(vfat), "::/"], capture_output=True, text=True,
                         check=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    return [line.strip().lstrip(":").strip("/") for line in out.stdout.splitlines() if line]


def fat_read_of(vfat, name):
    import os
    return subprocess.run(["mtype", "-i", str(vfat), f"::/{name}"], capture_output=True,
                          check=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout


def test_initial_uboot_env_has_slot_a_committed_and_b_empty(tree, tmp_path):
    img, _ = build(tree, tmp_path)
    env = tmp_path / "uboot.env"
    env.write_bytes(fat_read(img, "homenode-ab.env"))
    conf = tmp_path / "fw_env.config"
    conf.write_text(f"{env} 0x0000 {slots.UBOOT_ENV_SIZE:#x}\n")
    out = subprocess.run(["fw_printenv", "-c", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split("\n")) >= {"BOOT_ORDER=A B", "BOOT_A_LEFT=3", "BOOT_B_LEFT=0"}


def test_slot_images_are_the_bundle_payload(tree, tmp_path):
    build(tree, tmp_path)
    slots_dir = tmp_path / "slots-disk.img"
    root = slots_dir / "root.ext4"
    fsck = subprocess.run(["e2fsck", "-fn", str(root)], capture_output=True, text=True)
    assert fsck.returncode == 0
    assert root.stat().st_size < SMALL.root_slot_mib << 20  # content-sized; RAUC grows it
    assert "cmdline.txt.in" in fat_files_of(slots_dir / "boot.vfat")
    assert "cmdline.txt" not in fat_files_of(slots_dir / "boot.vfat")  # the bundle hook writes it


def test_root_that_leaves_too_little_headroom_is_refused(tree, tmp_path):
    (tree / "big").write_bytes(b"x" * (80 << 20))
    with pytest.raises(SystemExit, match="slot sizes cannot change"):
        build(tree, tmp_path)


def _sha(img, start, size):
    h = hashlib.sha256()
    with open(img, "rb") as f:
        f.seek(start)
        left = size
        while left:
            b = f.read(min(1 << 20, left))
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def test_same_epoch_same_partition_table_boot_and_data_bytes(tree, tmp_path):
    """Same tree + SOURCE_DATE_EPOCH: MBR, FAT and data partitions are bit-identical. (The ext4
    root is not: mke2fs -d in the host's e2fsprogs 1.47.0 copies each inode's ctime from the
    build tree, which nobody can set; see README.)"""
    runs = []
    for i in range(2):
        t = tmp_path / f"t{i}"
        shutil.copytree(tree, t, symlinks=True)
        img, _ = build(t, tmp_path, f"d{i}.img")
        parts = partitions(img)
        runs.append([_sha(img, 0, 512)] + [_sha(img, p["start"] * 512, p["size"] * 512)
                                           for i2, p in enumerate(parts) if i2 in (0, 1, 6)])
    assert runs[0] == runs[1]
