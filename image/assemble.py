"""Stage 3: the partitioned disk image, built from files without loop devices.

Layout (MBR, as the Pi boot ROM wants), first partition at 4 MiB like Raspberry Pi OS:
  1  FAT32 `bootfs`  firmware, kernel, initrd, config.txt, cmdline.txt, homenode.toml
  2  ext4  `rootfs`  the system (headroom for kernel updates)
  3  ext4  `hndata`  /var/lib/homenode, small in the image, grown to fill the card at first boot
Filesystems are made as plain files (mkfs.vfat + mtools, mkfs.ext4 -d) and copied into the
sparse disk file with dd conv=notrunc,sparse: no privileges beyond root in a container.
"""

import hashlib
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from image.progress import Progress

MiB = 1 << 20
FIRST_OFFSET_MIB = 4
BOOT_MIB = 256
DATA_MIB = 128
ROOT_HEADROOM_MIB = 512
# reserved GDT blocks so the data filesystem can grow online to 2 TiB (4 KiB blocks)
DATA_RESIZE_BLOCKS = (2 << 40) // 4096


@dataclass(frozen=True)
class Layout:
    boot_mib: int
    root_mib: int
    data_mib: int

    def offsets_mib(self) -> tuple[int, int, int]:
        boot = FIRST_OFFSET_MIB
        root = boot + self.boot_mib
        return boot, root, root + self.root_mib

    @property
    def total_mib(self) -> int:
        return FIRST_OFFSET_MIB + self.boot_mib + self.root_mib + self.data_mib


def tree_mib(path: Path) -> int:
    out = subprocess.run(["du", "-s", "--apparent-size", "--block-size=1M", "-x", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def plan_layout(root: Path) -> Layout:
    used = tree_mib(root)
    # ext4 overhead (inodes, journal, 4 KiB rounding of small files) + room for updates
    root_mib = -(-(int(used * 1.25) + ROOT_HEADROOM_MIB) // 4) * 4
    return Layout(BOOT_MIB, root_mib, DATA_MIB)


def stable_uuid(epoch: int, name: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(f"homenode {epoch} {name}".encode()).digest()[:16],
                         version=4))


def sfdisk_script(layout: Layout, epoch: int) -> str:
    boot, root, data = layout.offsets_mib()
    sec = MiB // 512
    label_id = int.from_bytes(hashlib.sha256(f"homenode {epoch}".encode()).digest()[:4], "big")
    return (f"label: dos\nlabel-id: 0x{label_id:08x}\nunit: sectors\n\n"
            f"start={boot * sec}, size={layout.boot_mib * sec}, type=c, bootable\n"
            f"start={root * sec}, size={layout.root_mib * sec}, type=83\n"
            f"start={data * sec}, size={layout.data_mib * sec}, type=83\n")


def make_boot_fs(src: Path, out: Path, mib: int, epoch: int) -> None:
    out.unlink(missing_ok=True)
    volid = hashlib.sha256(f"homenode {epoch} boot".encode()).hexdigest()[:8]
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "bootfs", "-i", volid, "--invariant",
                    "-C", str(out), str(mib * 1024)], check=True, capture_output=True)
    entries = sorted(str(p) for p in src.iterdir())
    if entries:
        subprocess.run(["mcopy", "-s", "-p", "-m", "-Q", "-i", str(out), *entries, "::/"],
                       check=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))


def make_ext4(src: Path, out: Path, mib: int, label: str, owner: str, epoch: int,
              extra: str = "") -> None:
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(mib * MiB)
    fs_uuid = stable_uuid(epoch, label)
    ext = f"root_owner={owner},hash_seed={fs_uuid}" + (f",{extra}" if extra else "")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", label, "-U", fs_uuid,
                    "-E", ext, "-d", str(src), str(out)], check=True,
                   env=dict(os.environ, E2FSPROGS_FAKE_TIME=str(epoch)))


def dd_into(disk: Path, part: Path, offset_mib: int) -> None:
    subprocess.run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={offset_mib}",
                    "conv=notrunc,sparse", "status=none"], check=True)


def assemble(root: Path, work: Path, image: Path, data_owner: str, epoch: int,
             progress: Progress) -> Layout:
    """Write the raw disk image `image` from the finished root tree."""
    boot_src = work / "bootfs-tree"
    if boot_src.exists():
        shutil.rmtree(boot_src)
    # moving the FAT contents out must not change any time stamp in the root tree (reproducible)
    mount_point = root / "boot/firmware"
    times = {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (mount_point,
                                                                        mount_point.parent)}
    shutil.move(mount_point, boot_src)
    mount_point.mkdir()
    for p, t in times.items():
        os.utime(p, ns=t)
    try:
        layout = plan_layout(root)
        progress.note(f"layout: boot {layout.boot_mib} MiB, root {layout.root_mib} MiB, "
                      f"data {layout.data_mib} MiB (grows at first boot)")
        parts = work / "parts"
        parts.mkdir(exist_ok=True)
        make_boot_fs(boot_src, parts / "boot.vfat", layout.boot_mib, epoch)
        progress.note("boot filesystem (FAT32) written")
        make_ext4(root, parts / "root.ext4", layout.root_mib, "rootfs", "0:0", epoch)
        progress.note("root filesystem (ext4) written")
        empty = work / "data-tree"
        empty.mkdir(exist_ok=True)
        make_ext4(empty, parts / "data.ext4", layout.data_mib, "hndata", data_owner, epoch,
                  extra=f"resize={DATA_RESIZE_BLOCKS}")
        image.unlink(missing_ok=True)
        with open(image, "wb") as f:
            f.truncate(layout.total_mib * MiB)
        subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(image)],
                       input=sfdisk_script(layout, epoch), text=True, check=True)
        for part, offset in zip(("boot.vfat", "root.ext4", "data.ext4"), layout.offsets_mib(),
                                strict=True):
            dd_into(image, parts / part, offset)
            (parts / part).unlink()
    finally:
        shutil.rmtree(mount_point)
        shutil.move(boot_src, mount_point)
        for p, t in times.items():
            os.utime(p, ns=t)
    return layout
