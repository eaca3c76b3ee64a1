"""RAUC update bundles (.raucb) from the slot images of a build.

A bundle holds the two images of one slot group, `boot.vfat` (kernel, initrd, DTBs, Pi firmware)
and `root.ext4`, plus a hook that points the boot slot's cmdline.txt at its root partition. It is
a `verity` bundle (RAUC's recommended format: a squashfs whose every block is checked by
dm-verity against a hash in the signed manifest), signed with the release key (or the TEST key).

`derive()` makes a second version cheaply for tests: the same root image with a few files
changed in place by debugfs (a version marker, a broken node, no init) - no second image build.
"""

import os
import shutil
import subprocess
from pathlib import Path

from firmware.update import layout
from image import bootfiles
from image.keys import SigningKey

# zstd: the Pi's kernel reads squashfs-zstd quickly; level 19 for releases, lower while testing
DEFAULT_ZSTD_LEVEL = 19


def manifest(version: str, build: str, description: str) -> str:
    return f"""[update]
compatible={layout.COMPATIBLE}
version={version}
build={build}
description={description}

[bundle]
format=verity

[hooks]
filename=hook.sh

[image.boot]
filename=boot.vfat
hooks=post-install

[image.rootfs]
filename=root.ext4
"""


def make_bundle(boot: Path, root: Path, out: Path, version: str, build: str,
                signing: SigningKey, work: Path, zstd_level: int = DEFAULT_ZSTD_LEVEL,
                description: str = "homenode system update") -> Path:
    if signing.key is None:
        raise SystemExit("image: no signing key: give --sign-key (the release key) or build "
                         "with the test key")
    content = work / "bundle-content"
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir(parents=True)
    for src, name in ((boot, "boot.vfat"), (root, "root.ext4")):
        try:
            os.link(src, content / name)
        except OSError:
            subprocess.run(["cp", "--sparse=always", str(src), str(content / name)], check=True)
    (content / "manifest.raucm").write_text(manifest(version, build, description))
    hook = content / "hook.sh"
    hook.write_text(bootfiles.bundle_hook())
    hook.chmod(0o755)
    out.unlink(missing_ok=True)
    r = subprocess.run(["rauc", "bundle", f"--cert={signing.cert}", f"--key={signing.key}",
                        f"--mksquashfs-args=-comp zstd -Xcompression-level {zstd_level} -quiet",
                        str(content), str(out)], capture_output=True, text=True)
    shutil.rmtree(content)
    if r.returncode != 0:
        raise SystemExit(f"image: rauc bundle failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return out


def file_mode(image: Path, path: str) -> int | None:
    """Permission bits of `path` in an ext4 image (None if it does not exist)."""
    r = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True,
                       text=True)
    for token in r.stdout.split():
        if token.startswith("0") and len(token) == 4 and token.isdigit():
            return int(token, 8)
    return None


def edit_ext4(image: Path, writes: dict[str, bytes | None], work: Path) -> None:
    """Replace (bytes) or delete (None) files in an unmounted ext4 image, in place."""
    work.mkdir(parents=True, exist_ok=True)
    cmds = []
    for i, (path, data) in enumerate(sorted(writes.items())):
        mode = file_mode(image, path)
        cmds.append(f"rm {path}")
        if data is not None:
            local = work / f"edit-{i}"
            local.write_bytes(data)
            local.chmod(mode if mode is not None else 0o644)  # debugfs copies the local mode
            cmds.append(f"write {local} {path}")
    script = work / "debugfs.cmds"
    script.write_text("\n".join(cmds) + "\n")
    r = subprocess.run(["debugfs", "-w", "-f", str(script), str(image)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"image: debugfs failed on {image}: {r.stderr.strip()}")
    check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"image: {image} is not clean after editing:\n{check.stdout[-800:]}")


def derive(slots_dir: Path, out: Path, version: str, signing: SigningKey, work: Path,
           writes: dict[str, bytes | None], boot_writes: dict[str, bytes] | None = None,
           zstd_level: int = 3) -> Path:
    """A bundle of the build's slot images with `writes` applied to the root image (and
    `boot_writes` to the boot image): a cheap second version for the update tests."""
    work.mkdir(parents=True, exist_ok=True)
    root = work / "root.ext4"
    subprocess.run(["cp", "--sparse=always", str(slots_dir / "root.ext4"), str(root)], check=True)
    edit_ext4(root, writes, work / "edits")
    boot = slots_dir / "boot.vfat"
    if boot_writes:
        boot = work / "boot.vfat"
        shutil.copy2(slots_dir / "boot.vfat", boot)
        for name, data in boot_writes.items():
            local = work / f"boot-{name}"
            local.write_bytes(data)
            subprocess.run(["mcopy", "-o", "-i", str(boot), str(local), f"::/{name}"],
                           check=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    try:
        return make_bundle(boot, root, out, version, f"derived-{version}", signing, work,
                           zstd_level=zstd_level, description=f"homenode {version} (test)")
    finally:
        root.unlink(missing_ok=True)
