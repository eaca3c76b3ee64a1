"""Stage 3: the slot images and the partitioned disk image, built from files without loop devices.

Layout (MBR, as the Pi boot ROM wants; partition numbers in firmware/update/layout.py):
  1  FAT32 `bootfs`  shared boot files + homenode.toml      BOOTFS_MIB
  2  FAT32           slot A boot files                       BOOT_SLOT_MIB
  3  FAT32           slot B boot files (empty in the image)  BOOT_SLOT_MIB
  4  extended
  5  ext4 `rootfs`   slot A root filesystem                  ROOT_SLOT_MIB
  6  ext4            slot B root filesystem (empty)          ROOT_SLOT_MIB
  7  ext4 `hndata`   /data, grown to fill the card at first boot
Slot sizes are fixed for the life of a card: every later bundle must fit them, so the build
fails when the root filesystem leaves less than ROOT_MIN_HEADROOM free in its slot.

The same two slot images (`boot.vfat`, `root.ext4`) go into the disk's slot A and into the
update bundle. Filesystems are made as plain files (mkfs.vfat + mtools, mkfs.ext4 -d) and copied
into the sparse disk file with dd conv=notrunc,sparse: no privileges beyond root in a container.
"""

import grp
import hashlib
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from firmware.update import layout as slots
from image import bootfiles
from image.progress import Progress

MiB = 1 << 20
FIRST_OFFSET_MIB = 4
BOOTFS_MIB = 256
BOOT_SLOT_MIB = 128
ROOT_SLOT_MIB = 1024
ROOT_MIN_HEADROOM = 0.30  # of the slot, free after the root filesystem, for later releases
DATA_MIB = 128
EBR_GAP_MIB = 1  # room for the extended boot record before each logical partition
# reserved GDT blocks so the data filesystem can grow online to 2 TiB (4 KiB blocks)
DATA_RESIZE_BLOCKS = (2 << 40) // 4096


@dataclass(frozen=True)
class Part:
    number: int
    start_mib: int
    size_mib: int
    type: str  # MBR type: c FAT32 (LBA), 5 extended, 83 Linux

    @property
    def end_mib(self) -> int:
        return self.start_mib + self.size_mib


@dataclass(frozen=True)
class Layout:
    bootfs_mib: int = BOOTFS_MIB
    boot_slot_mib: int = BOOT_SLOT_MIB
    root_slot_mib: int = ROOT_SLOT_MIB
    data_mib: int = DATA_MIB

    def parts(self) -> list[Part]:
        p1 = Part(slots.BOOTFS_PART, FIRST_OFFSET_MIB, self.bootfs_mib, "c")
        p2 = Part(slots.SLOTS[0].boot_part, p1.end_mib, self.boot_slot_mib, "c")
        p3 = Part(slots.SLOTS[1].boot_part, p2.end_mib, self.boot_slot_mib, "c")
        p5 = Part(slots.SLOTS[0].root_part, p3.end_mib + EBR_GAP_MIB, self.root_slot_mib, "83")
        p6 = Part(slots.SLOTS[1].root_part, p5.end_mib + EBR_GAP_MIB, self.root_slot_mib, "83")
        p7 = Part(slots.DATA_PART, p6.end_mib + EBR_GAP_MIB, self.data_mib, "83")
        p4 = Part(slots.EXTENDED_PART, p3.end_mib, p7.end_mib - p3.end_mib, "5")
        return [p1, p2, p3, p4, p5, p6, p7]

    def part(self, number: int) -> Part:
        return next(p for p in self.parts() if p.number == number)

    @property
    def total_mib(self) -> int:
        return max(p.end_mib for p in self.parts())


def tree_mib(path: Path) -> int:
    """Disk usage (allocated, not apparent: small files cost whole blocks in ext4 too)."""
    out = subprocess.run(["du", "-s", "--block-size=1M", "-x", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def root_fs_mib(used_mib: int) -> int:
    """The root filesystem image: its content plus inode tables and journal (RAUC grows it to
    the slot on install, `resize=true`)."""
    return -(-(int(used_mib * 1.15) + 64) // 4) * 4


def check_fits(used_mib: int, layout: Layout) -> None:
    need = root_fs_mib(used_mib)
    if need > layout.root_slot_mib * (1 - ROOT_MIN_HEADROOM):
        raise SystemExit(f"image: the root filesystem needs {need} MiB; a {layout.root_slot_mib} "
                         f"MiB slot must keep {ROOT_MIN_HEADROOM:.0%} free for later releases. "
                         "Make the system smaller (slot sizes cannot change on cards in use).")


def disk_id(epoch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"homenode {epoch}".encode()).digest()[:4], "big")


def partuuid(epoch: int, number: int) -> str:
    return f"{disk_id(epoch):08x}-{number:02x}"


def stable_uuid(epoch: int, name: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(f"homenode {epoch} {name}".encode()).digest()[:16],
                         version=4))


def sfdisk_script(layout: Layout, epoch: int) -> str:
    sec = MiB // 512
    lines = ["label: dos", f"label-id: 0x{disk_id(epoch):08x}", "unit: sectors", ""]
    for p in layout.parts():
        boot = ", bootable" if p.number == slots.BOOTFS_PART else ""
        lines.append(f"start={p.start_mib * sec}, size={p.size_mib * sec}, type={p.type}{boot}")
    return "\n".join(lines) + "\n"


def make_vfat(src: Path, out: Path, mib: int, label: str, epoch: int) -> None:
    out.unlink(missing_ok=True)
    volid = hashlib.sha256(f"homenode {epoch} {label}".encode()).hexdigest()[:8]
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", label, "-i", volid, "--invariant",
                    "-C", str(out), str(mib * 1024)], check=True, capture_output=True)
    for p in src.rglob("*"):  # FAT keeps modification times: the epoch for reproducible images
        os.utime(p, (epoch, epoch), follow_symlinks=False)
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


def clamp_ctimes(fs: Path, paths: list[str], epoch: int) -> None:
    """mke2fs -d copies each inode's change time from the build tree (nobody can set that on
    the host): set it to the epoch for the few inodes of a small tree (reproducible images)."""
    script = fs.with_name(fs.name + ".debugfs")
    script.write_text("".join(f"sif {p} ctime @{epoch}\n" for p in paths))
    subprocess.run(["debugfs", "-w", "-f", str(script), str(fs)], check=True,
                   capture_output=True)
    script.unlink()


def grown_copy(src: Path, out: Path, mib: int) -> None:
    """`src` ext4 grown to `mib` (what RAUC's resize=true does on the device)."""
    subprocess.run(["cp", "--sparse=always", str(src), str(out)], check=True)
    with open(out, "r+b") as f:
        f.truncate(mib * MiB)
    subprocess.run(["resize2fs", "-f", str(out)], check=True, capture_output=True)


def dd_into(disk: Path, part: Path, offset_mib: int) -> None:
    subprocess.run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={offset_mib}",
                    "conv=notrunc,sparse", "status=none"], check=True)


def data_tree(dest: Path, data_owner: str, journal_gid: int, epoch: int) -> None:
    """/data as the image ships it: the node's directory and the system's records."""
    if dest.exists():
        shutil.rmtree(dest)
    uid, gid = (int(x) for x in data_owner.split(":"))
    (dest / "homenode").mkdir(parents=True, mode=0o750)
    os.chown(dest / "homenode", uid, gid)
    os.chmod(dest / "homenode", 0o750)
    for name, mode in (("system", 0o755), ("system/ssh", 0o700), ("system/rauc", 0o755),
                       ("system/update", 0o755), ("system/journal", 0o2755)):
        (dest / name).mkdir(exist_ok=True)
        os.chmod(dest / name, mode)
    os.chown(dest / "system/journal", 0, journal_gid)
    os.chmod(dest / "system/journal", 0o2755)
    for p in sorted(dest.rglob("*"), reverse=True) + [dest]:
        os.utime(p, (epoch, epoch))


def journal_gid(root: Path) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        f = line.split(":")
        if f[0] == "systemd-journal":
            return int(f[2])
    return grp.getgrnam("root").gr_gid


def slot_images(root: Path, work: Path, out: Path, epoch: int, layout: Layout,
                progress: Progress) -> tuple[Path, Path, int]:
    """boot.vfat and root.ext4 of this system in `out` (the disk's slot A and the bundle).
    Moves the kernel out of the root tree into the boot image. Returns (boot, root, used MiB)."""
    out.mkdir(parents=True, exist_ok=True)
    tree = work / "slot-boot-tree"
    bootfiles.slot_boot_tree(root, tree)
    boot = out / "boot.vfat"
    make_vfat(tree, boot, layout.boot_slot_mib, "HNBOOT", epoch)
    shutil.rmtree(tree)
    for p in list((root / "boot").glob("vmlinuz-*")) + list((root / "boot").glob("initrd.img-*")):
        p.unlink()  # they live in the boot slot now
    used = tree_mib(root)
    check_fits(used, layout)
    rootfs = out / "root.ext4"
    make_ext4(root, rootfs, root_fs_mib(used), "rootfs", "0:0", epoch)
    progress.note(f"slot images: boot.vfat ({layout.boot_slot_mib} MiB FAT32), root.ext4 "
                  f"({root_fs_mib(used)} MiB for {used} MiB of files; slot {layout.root_slot_mib}"
                  " MiB)")
    return boot, rootfs, used


def assemble(root: Path, work: Path, image: Path, slots_dir: Path, data_owner: str, epoch: int,
             progress: Progress, layout: Layout = Layout()) -> Layout:
    """Write the raw disk image `image` and the slot images in `slots_dir` from the root tree."""
    mount_point = root / "boot/firmware"
    times = {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (mount_point,
                                                                        mount_point.parent)}
    bootfs_src = work / "bootfs-tree"
    bootfiles.bootfs_tree(root, bootfs_src, epoch)
    # the root's /boot/firmware is only the mount point of bootfs
    shutil.rmtree(mount_point)
    mount_point.mkdir()
    for p, t in times.items():
        os.utime(p, ns=t)
    parts_dir = work / "parts"
    parts_dir.mkdir(exist_ok=True)
    boot_img, root_img, _ = slot_images(root, work, slots_dir, epoch, layout, progress)
    files = {}
    files[slots.BOOTFS_PART] = parts_dir / "bootfs.vfat"
    make_vfat(bootfs_src, files[slots.BOOTFS_PART], layout.bootfs_mib, slots.BOOTFS_LABEL,
              epoch)
    shutil.rmtree(bootfs_src)
    # slot A: the slot images, with the command line the Pi 4/5 firmware passes for slot A
    a = slots.SLOTS[0]
    files[a.boot_part] = parts_dir / "boot-a.vfat"
    shutil.copy2(boot_img, files[a.boot_part])
    cmdline = parts_dir / "cmdline.txt"
    cmdline.write_text(bootfiles.slot_cmdline(partuuid(epoch, a.root_part), a.name))
    os.utime(cmdline, (epoch, epoch))
    subprocess.run(["mcopy", "-o", "-m", "-i", str(files[a.boot_part]), str(cmdline), "::/cmdline.txt"],
                   check=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    files[a.root_part] = parts_dir / "root-a.ext4"
    grown_copy(root_img, files[a.root_part], layout.root_slot_mib)
    progress.note("slot A written; slot B left empty (an update fills it)")
    dtree = work / "data-tree"
    data_tree(dtree, data_owner, journal_gid(root), epoch)
    files[slots.DATA_PART] = parts_dir / "data.ext4"
    make_ext4(dtree, files[slots.DATA_PART], layout.data_mib, slots.DATA_LABEL, "0:0", epoch,
              extra=f"resize={DATA_RESIZE_BLOCKS}")
    clamp_ctimes(files[slots.DATA_PART], ["/"] + sorted(
        "/" + str(p.relative_to(dtree)) for p in dtree.rglob("*")), epoch)
    shutil.rmtree(dtree)
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(layout.total_mib * MiB)
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(image)],
                   input=sfdisk_script(layout, epoch), text=True, check=True)
    for number, path in sorted(files.items()):
        dd_into(image, path, layout.part(number).start_mib)
        path.unlink()
    return layout
