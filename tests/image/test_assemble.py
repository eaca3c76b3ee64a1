"""Disk assembly without loop devices (image/assemble.py) on a tiny tree, with the real tools:
mkfs.vfat + mtools, mkfs.ext4 -d, sfdisk on a file, dd into the sparse image; then checked with
sfdisk, mtools, e2fsck and debugfs. No emulation, a few seconds."""

import hashlib
import subprocess

import pytest

from image import assemble
from image.progress import Progress
from qemu.harness import extract_partition, fat_files, fat_read, partitions
from tests.tools import require_tools

TOOLS = ("mkfs.vfat", "mcopy", "mdir", "mkfs.ext4", "sfdisk", "e2fsck", "debugfs")


@pytest.fixture(autouse=True)
def _tools():
    require_tools(*TOOLS, package="dosfstools mtools e2fsprogs fdisk")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("homenode\n")
    (root / "boot/firmware/overlays").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text("arm_64bit=1\n")
    (root / "boot/firmware/overlays/x.dtbo").write_bytes(b"\xd0\x0d" * 100)
    (root / "var/lib/homenode").mkdir(parents=True)
    return root


def test_assembled_image_has_three_clean_partitions(tree, tmp_path):
    img = tmp_path / "disk.img"
    work = tmp_path / "work"
    work.mkdir()
    layout = assemble.assemble(tree, work, img, "999:998", 1_700_000_000,
                               Progress(1, out=open("/dev/null", "w")))
    assert img.stat().st_size == layout.total_mib << 20
    assert img.stat().st_blocks * 512 < img.stat().st_size // 4  # sparse
    parts = partitions(img)
    assert [p["type"] for p in parts] == ["c", "83", "83"]
    assert parts[0]["start"] == 8192  # 4 MiB, like Raspberry Pi OS
    assert parts[0].get("bootable") is True
    assert parts[2]["size"] == assemble.DATA_MIB * 2048
    # boot partition: the firmware files, readable with mtools at the 4 MiB offset
    assert {"config.txt", "overlays"} <= set(fat_files(img))
    assert fat_read(img, "config.txt") == b"arm_64bit=1\n"
    # root and data: clean ext4 with the right labels, contents and owner
    for n, label in ((2, "rootfs"), (3, "hndata")):
        part = extract_partition(img, n, tmp_path / f"p{n}")
        fsck = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        out = subprocess.run(["dumpe2fs", "-h", str(part)], capture_output=True, text=True)
        assert f"Filesystem volume name:   {label}" in out.stdout
        if n == 2:
            cat = subprocess.run(["debugfs", "-R", "cat /etc/hostname", str(part)],
                                 capture_output=True, text=True)
            assert cat.stdout == "homenode\n"
            ls = subprocess.run(["debugfs", "-R", "ls /boot/firmware", str(part)],
                                capture_output=True, text=True)
            assert "config.txt" not in ls.stdout  # the FAT mount point stays empty
        else:
            st = subprocess.run(["debugfs", "-R", "stat /", str(part)], capture_output=True,
                                text=True)
            assert "User:   999   Group:   998" in st.stdout
    # the tree is restored for the caller
    assert (tree / "boot/firmware/config.txt").exists()


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
    root is not: mke2fs -d in bookworm's e2fsprogs 1.47.0 copies each inode's ctime from the
    build tree, which nobody can set; see README.)"""
    runs = []
    for i in range(2):
        work = tmp_path / f"w{i}"
        work.mkdir()
        img = tmp_path / f"d{i}.img"
        assemble.assemble(tree, work, img, "0:0", 1_700_000_000,
                          Progress(1, out=open("/dev/null", "w")))
        parts = partitions(img)
        runs.append([_sha(img, 0, 512)] + [_sha(img, p["start"] * 512, p["size"] * 512)
                                           for p in (parts[0], parts[2])])
    assert runs[0] == runs[1]
