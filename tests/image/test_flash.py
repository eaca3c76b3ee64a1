"""`homenode flash` without QEMU: real files, real xz streams, fake sysfs trees for disks."""

import io
import lzma
import os
import stat

import pytest

from firmware import flash


def make_image(path, mib=6):
    """A small disk-like image: data, a long zero run (must come out sparse), data."""
    data = os.urandom(1 << 20) + bytes(4 << 20) + os.urandom((mib - 5) << 20) + b"tail!"
    path.write_bytes(data)
    return data


def xz(src, dst):
    dst.write_bytes(lzma.compress(src.read_bytes(), format=lzma.FORMAT_XZ))


def args(image, device, *extra):
    import argparse
    p = argparse.ArgumentParser()
    flash.add_arguments(p)
    return p.parse_args([str(image), str(device), *extra])


class NotTTY(io.StringIO):
    def isatty(self):
        return False


def test_flash_xz_to_plain_file_is_exact_sparse_and_verified(tmp_path):
    raw = tmp_path / "disk.img"
    data = make_image(raw)
    xz(raw, tmp_path / "disk.img.xz")
    out = io.StringIO()
    target = tmp_path / "card.img"
    rc = flash.run(args(tmp_path / "disk.img.xz", target, "--yes"), out=out)
    assert rc == 0, out.getvalue()
    assert target.read_bytes() == data
    assert "verified" in out.getvalue()
    # the 4 MiB zero run was skipped, not written
    assert target.stat().st_blocks * 512 < len(data) - (3 << 20)


def test_flash_raw_image(tmp_path):
    raw = tmp_path / "disk.img"
    data = make_image(raw, mib=5)
    target = tmp_path / "out.img"
    assert flash.run(args(raw, target, "--yes"), out=io.StringIO()) == 0
    assert target.read_bytes() == data


def test_existing_target_needs_confirmation_when_not_interactive(tmp_path):
    raw = tmp_path / "disk.img"
    make_image(raw, mib=5)
    target = tmp_path / "precious.img"
    target.write_bytes(b"keep me")
    out = io.StringIO()
    assert flash.run(args(raw, target), stdin=NotTTY(), out=out) == 1
    assert "--yes" in out.getvalue()
    assert target.read_bytes() == b"keep me"


def test_truncated_xz_is_a_clear_error(tmp_path):
    raw = tmp_path / "disk.img"
    make_image(raw)
    xz(raw, tmp_path / "disk.img.xz")
    cut = tmp_path / "cut.img.xz"
    cut.write_bytes((tmp_path / "disk.img.xz").read_bytes()[:-5000])
    out = io.StringIO()
    assert flash.run(args(cut, tmp_path / "card.img", "--yes"), out=out) == 1
    assert "truncated" in out.getvalue()


def test_missing_image_is_a_clear_error(tmp_path):
    out = io.StringIO()
    assert flash.run(args(tmp_path / "nope.img.xz", tmp_path / "c.img", "--yes"), out=out) == 1
    assert "no such image file" in out.getvalue()


def test_verify_detects_a_card_that_lies(tmp_path):
    f = tmp_path / "card.img"
    f.write_bytes(b"a" * 3000)
    good = __import__("hashlib").sha256(b"a" * 3000).hexdigest()
    flash.verify(str(f), 3000, good)
    f.write_bytes(b"a" * 2999 + b"b")
    with pytest.raises(flash.FlashError, match="verification failed"):
        flash.verify(str(f), 3000, good)
    with pytest.raises(flash.FlashError, match="ended after"):
        flash.verify(str(f), 4000, good)


def test_image_size_reads_the_xz_index(tmp_path):
    raw = tmp_path / "disk.img"
    data = make_image(raw, mib=5)
    xz(raw, tmp_path / "disk.img.xz")
    assert flash.image_size(str(tmp_path / "disk.img.xz")) == len(data)
    assert flash.image_size(str(raw)) == len(data)


# --- disks: a fake sysfs tree ----------------------------------------------------------------

def fake_sysfs(root, disks):
    """disks: {name: dict(devnum, size_sectors, removable, model, parts={name: devnum})}."""
    for name, d in disks.items():
        dev = root / "devices/platform/host" / name
        dev.mkdir(parents=True)
        (dev / "size").write_text(f"{d['size']}\n")
        (dev / "removable").write_text(f"{d.get('removable', 0)}\n")
        (dev / "device").mkdir()
        (dev / "device/model").write_text(d.get("model", "") + "\n")
        if d.get("type"):
            (dev / "device/type").write_text(d["type"] + "\n")
        _link(root, name, dev, d["devnum"])
        for pname, pnum in d.get("parts", {}).items():
            pdev = dev / pname
            pdev.mkdir()
            (pdev / "partition").write_text("1\n")
            _link(root, pname, pdev, pnum)


def _link(root, name, dev, devnum):
    for d in ("class/block", "dev/block"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "class/block" / name).symlink_to(dev)
    (root / "dev/block" / devnum).symlink_to(dev)


@pytest.fixture
def sysroot(tmp_path):
    fake_sysfs(tmp_path / "sys", {
        "sda": dict(devnum="8:0", size=500_000_000, model="Samsung SSD 870",
                    parts={"sda1": "8:1", "sda2": "8:2"}),
        "sdb": dict(devnum="8:16", size=62_333_952, removable=1, model="STORAGE DEVICE",
                    parts={"sdb1": "8:17"}),
        "mmcblk0": dict(devnum="179:0", size=31_116_288, type="SD", model=""),
    })
    return tmp_path / "sys"


def blockdev(tmp_path, name, major, minor):
    """A device node whose numbers exist only in the fake sysfs (opening it would fail)."""
    if os.geteuid() != 0:
        pytest.skip("creating device nodes needs root (CI runs as root)")
    p = tmp_path / name
    os.mknod(p, stat.S_IFBLK | 0o600, os.makedev(major, minor))
    return str(p)


MOUNTS = "/dev/sda2 / ext4 rw 0 0\n/dev/sda1 /boot/efi vfat rw 0 0\nproc /proc proc rw 0 0\n"


def test_removable_card_is_accepted_and_described(tmp_path, sysroot):
    t = flash.inspect_target(blockdev(tmp_path, "sdb", 8, 16), sysroot, MOUNTS, {"/": "8:2"})
    assert t.is_block and t.removable and not t.holds_system and t.mounted == []
    assert t.size == 62_333_952 * 512
    assert "STORAGE DEVICE" in t.describe() and "31.9 GB" in t.describe()
    assert flash.refusal(t, force=False, image_size=2 << 30) is None


def test_system_disk_is_refused_even_with_force(tmp_path, sysroot):
    t = flash.inspect_target(blockdev(tmp_path, "sda", 8, 0), sysroot, MOUNTS, {"/": "8:2"})
    assert t.holds_system
    why = flash.refusal(t, force=True, image_size=None)
    assert "running system" in why


def test_system_disk_found_by_device_number_when_mounts_say_dev_root(tmp_path, sysroot):
    mounts = "/dev/root / ext4 rw 0 0\n"
    t = flash.inspect_target(blockdev(tmp_path, "sda", 8, 0), sysroot, mounts, {"/": "8:1"})
    assert t.holds_system


def test_non_removable_disk_needs_force(tmp_path, sysroot):
    # sda without the system on it (root elsewhere): refused without --force only
    t = flash.inspect_target(blockdev(tmp_path, "sda", 8, 0), sysroot, "", {"/": "179:99"})
    assert not t.holds_system and not t.removable
    assert "--force" in flash.refusal(t, force=False, image_size=None)
    assert flash.refusal(t, force=True, image_size=None) is None


def test_mounted_card_is_refused(tmp_path, sysroot):
    mounts = MOUNTS + "/dev/sdb1 /media/user/bootfs vfat rw 0 0\n"
    t = flash.inspect_target(blockdev(tmp_path, "sdb", 8, 16), sysroot, mounts, {"/": "8:2"})
    assert "umount /dev/sdb1" in flash.refusal(t, force=True, image_size=None)


def test_sd_card_in_builtin_reader_counts_as_removable(tmp_path, sysroot):
    t = flash.inspect_target(blockdev(tmp_path, "mmcblk0", 179, 0), sysroot, "", {})
    assert t.removable


def test_partition_is_refused_with_the_disk_to_use(tmp_path, sysroot):
    with pytest.raises(flash.FlashError, match="/dev/sdb"):
        flash.inspect_target(blockdev(tmp_path, "sdb1", 8, 17), sysroot, "", {})


def test_too_small_card_is_refused(tmp_path, sysroot):
    t = flash.inspect_target(blockdev(tmp_path, "mmcblk0", 179, 0), sysroot, "", {})
    assert "bigger card" in flash.refusal(t, force=False, image_size=32 << 30)


def test_real_root_disk_of_this_machine_is_refused():
    """Inspection only (nothing is opened for writing): the disk under / must be refused."""
    d = os.stat("/").st_dev
    link = f"/sys/dev/block/{os.major(d)}:{os.minor(d)}"
    if not os.path.exists(link):
        pytest.skip("/ is not on a block device here (overlay or tmpfs root)")
    name = os.path.basename(os.path.realpath(link))
    disk = flash._disk_of(name, __import__("pathlib").Path("/sys"))
    t = flash.inspect_target(f"/dev/{disk}")
    assert t.holds_system
    assert "running system" in flash.refusal(t, force=True, image_size=None)
