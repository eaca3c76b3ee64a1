"""Update bundles (image/bundle.py) with the real tools, no emulation: RAUC's `rauc bundle` and
`rauc info` (the same signature check the box runs first), debugfs edits of a root image, and
the bundle hook that writes a boot slot's cmdline.txt."""

import json
import os
import shutil
import subprocess

import pytest

from firmware.update import layout
from image import bootfiles, bundle, keys
from tests.tools import require_tools

TOOLS = ("rauc", "mksquashfs", "openssl", "mkfs.ext4", "debugfs", "e2fsck", "mkfs.vfat",
         "mcopy")


@pytest.fixture(autouse=True)
def _tools():
    require_tools(*TOOLS, package="rauc squashfs-tools openssl e2fsprogs dosfstools mtools")


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    keys.make_key(d / "test.key.pem", d / "test.cert.pem", "/CN=homenode TEST key")
    keys.make_key(d / "other.key.pem", d / "other.cert.pem", "/CN=somebody else")
    return {"test": keys.SigningKey(d / "test.cert.pem", d / "test.key.pem", test=True),
            "other": keys.SigningKey(d / "other.cert.pem", d / "other.key.pem", test=True)}


@pytest.fixture
def slots(tmp_path):
    """Tiny slot images: a root with a release record, a boot partition with the template."""
    tree = tmp_path / "tree"
    (tree / "etc/homenode").mkdir(parents=True)
    (tree / "usr/sbin").mkdir(parents=True)
    (tree / "etc/homenode/release.json").write_text('{"version": "0.1.0"}\n')
    (tree / "usr/sbin/init").write_text("#!/bin/sh\n")
    (tree / "usr/sbin/init").chmod(0o755)
    (tree / "payload").write_bytes(os.urandom(64 << 10))  # squashfs must hold > 4 KiB
    d = tmp_path / "slots"
    d.mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(d / "root.ext4"), "8M"], check=True)
    boot = tmp_path / "boottree"
    boot.mkdir()
    (boot / "cmdline.txt.in").write_text(bootfiles.CMDLINE_TEMPLATE)
    (boot / "vmlinuz").write_bytes(b"kernel")
    from image.assemble import make_vfat
    make_vfat(boot, d / "boot.vfat", 40, "HNBOOT", 1_700_000_000)
    return d


def info(path, cert):
    return subprocess.run(["rauc", "info", f"--keyring={cert}", "--output-format=json",
                           str(path)], capture_output=True, text=True)


def test_bundle_is_signed_verity_with_both_images_and_the_hook(tmp_path, slots, signing):
    out = bundle.make_bundle(slots / "boot.vfat", slots / "root.ext4", tmp_path / "b.raucb",
                             "0.1.0", "abc123", signing["test"], tmp_path / "w", zstd_level=3)
    r = info(out, signing["test"].cert)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    assert doc["compatible"] == layout.COMPATIBLE and doc["version"] == "0.1.0"
    images = {k: v for img in doc["images"] for k, v in img.items()}
    assert set(images) == {"boot", "rootfs"}
    assert images["boot"]["hooks"] == ["post-install"]
    assert "Verified" in r.stderr or "verified" in r.stderr.lower()


def test_bundle_signed_by_another_key_is_refused_by_the_keyring(tmp_path, slots, signing):
    out = bundle.make_bundle(slots / "boot.vfat", slots / "root.ext4", tmp_path / "b.raucb",
                             "0.1.0", "abc", signing["other"], tmp_path / "w", zstd_level=3)
    r = info(out, signing["test"].cert)
    assert r.returncode != 0
    assert "signature" in (r.stderr + r.stdout).lower()


def test_derive_changes_only_the_requested_files(tmp_path, slots, signing):
    out = bundle.derive(slots, tmp_path / "v2.raucb", "0.1.0.2", signing["test"], tmp_path / "w",
                        {"/etc/homenode/release.json": b'{"version": "0.1.0.2"}\n',
                         "/usr/sbin/init": None})
    assert info(out, signing["test"].cert).returncode == 0
    # the edited copy is gone; check the edits on a fresh derivation's image
    root = tmp_path / "check.ext4"
    shutil.copy(slots / "root.ext4", root)
    bundle.edit_ext4(root, {"/etc/homenode/release.json": b"x\n", "/usr/sbin/init": None},
                     tmp_path / "e")
    cat = subprocess.run(["debugfs", "-R", "cat /etc/homenode/release.json", str(root)],
                         capture_output=True, text=True)
    assert cat.stdout == "x\n"
    ls = subprocess.run(["debugfs", "-R", "ls /usr/sbin", str(root)], capture_output=True,
                        text=True)
    assert "init" not in ls.stdout
    # the original slot image is untouched
    orig = subprocess.run(["debugfs", "-R", "cat /etc/homenode/release.json",
                           str(slots / "root.ext4")], capture_output=True, text=True)
    assert orig.stdout == '{"version": "0.1.0"}\n'


def test_edit_keeps_the_file_mode(tmp_path, slots):
    root = tmp_path / "r.ext4"
    shutil.copy(slots / "root.ext4", root)
    assert bundle.file_mode(root, "/usr/sbin/init") == 0o755
    bundle.edit_ext4(root, {"/usr/sbin/init": b"#!/bin/sh\nexit 1\n"}, tmp_path / "e")
    assert bundle.file_mode(root, "/usr/sbin/init") == 0o755
    assert bundle.file_mode(root, "/no/such/file") is None


@pytest.mark.parametrize("device, root, slot", [("/dev/mmcblk0p3", "/dev/mmcblk0p6", "B"),
                                                ("/dev/vda2", "/dev/vda5", "A")])
def test_bundle_hook_points_cmdline_at_the_slots_root(tmp_path, device, root, slot):
    """The hook as RAUC runs it after writing a boot slot (RAUC_* environment, slot mounted);
    `blkid` answers for the root partition it asks about."""
    hook = tmp_path / "hook.sh"
    hook.write_text(bootfiles.bundle_hook())
    hook.chmod(0o755)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "cmdline.txt.in").write_text(bootfiles.CMDLINE_TEMPLATE)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    asked = tmp_path / "asked"
    (bin_ / "blkid").write_text(f'#!/bin/sh\necho "$@" > {asked}\necho 9a8b7c6d-0{root[-1]}\n')
    (bin_ / "blkid").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}", RAUC_SLOT_CLASS="boot",
               RAUC_SLOT_DEVICE=device, RAUC_SLOT_BOOTNAME=slot,
               RAUC_SLOT_MOUNT_POINT=str(mnt))
    r = subprocess.run([str(hook), "slot-post-install"], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert asked.read_text().split()[-1] == root
    text = (mnt / "cmdline.txt").read_text()
    assert f"root=PARTUUID=9a8b7c6d-0{root[-1]} " in text
    assert f"rauc.slot={slot} homenode.boot=tryboot" in text
    # not a boot slot: nothing to do
    r = subprocess.run([str(hook), "slot-post-install"], capture_output=True, text=True,
                       env=dict(env, RAUC_SLOT_CLASS="rootfs"))
    assert r.returncode == 0


def test_release_index_of_bundles_verifies_on_the_box(tmp_path, slots, signing):
    """The maintainer's `python3 -m image.release index` output, read the way a box does."""
    from firmware.update import index
    from image import release

    site = tmp_path / "site"
    site.mkdir()
    b = bundle.make_bundle(slots / "boot.vfat", slots / "root.ext4", site / "hn-0.2.0.raucb",
                           "0.2.0", "x", signing["test"], tmp_path / "w", zstd_level=3)
    out = release.make_index(site / "index.json", [b], {b}, signing["test"].key, generated=42)
    idx = index.load(out.read_bytes(), (site / "index.json.sig").read_bytes(),
                     signing["test"].cert.read_bytes(), layout.COMPATIBLE)
    (rel,) = idx.releases
    assert (rel.version, rel.security, rel.url, rel.size) == ("0.2.0", True, "hn-0.2.0.raucb",
                                                              b.stat().st_size)
    assert index.choose(idx, "0.1.0", "security") == rel
    assert index.bundle_url("https://x.example/stable/index.json", rel) == \
        "https://x.example/stable/hn-0.2.0.raucb"
