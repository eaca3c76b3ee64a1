"""Stage 2: turn the cached base tree into the homenode root (fast: mostly host-side work).

Unpacks the base tarball, installs the node (venv + wheels), the device scripts, units and
config overlay, creates the unprivileged user, locks root, removes build-time secrets (SSH host
keys, machine-id) and writes the package manifest.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

from image import pydeps
from image.progress import Progress

HERE = Path(__file__).resolve().parent
OVERLAY = HERE / "overlay"
DEVICE = HERE / "device"
BOOT_TEMPLATE = HERE / "boot" / "homenode.toml"

FSTAB = """\
# <file system>  <mount point>      <type> <options>                                   <dump> <pass>
LABEL=rootfs      /                  ext4   defaults,noatime,commit=30                   0 1
LABEL=bootfs      /boot/firmware     vfat   defaults,noatime,fmask=0022,dmask=0022,nofail 0 2
LABEL=hndata      /var/lib/homenode  ext4   defaults,noatime,nosuid,nodev,noexec         0 2
"""

# Runs inside the arm64 chroot (emulated): keep it short.
CHROOT_SCRIPT = r"""
set -e
export LC_ALL=C.UTF-8
getent group gpio >/dev/null || groupadd --system gpio
id homenode >/dev/null 2>&1 || useradd --system --user-group --groups gpio \
    --home-dir /var/lib/homenode --no-create-home --shell /usr/sbin/nologin homenode
passwd --lock root >/dev/null
systemctl enable --quiet homenode.service homenode-setup.service homenode-boot-report.service \
    systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service
systemctl disable --quiet ssh.service ssh.socket wpa_supplicant.service
systemctl mask --quiet e2scrub_reap.service e2scrub_all.timer apt-daily.timer \
    apt-daily-upgrade.timer systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
"""


def unpack_base(tarball: Path, root: Path, progress: Progress) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    zstd = subprocess.Popen(["zstd", "-dc", str(tarball)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
                    "-C", str(root), "-xf", "-"], stdin=zstd.stdout, check=True)
    if zstd.wait() != 0:
        raise SystemExit(f"image: cannot unpack {tarball} (delete it to rebuild the base)")


def copy_overlay(root: Path) -> None:
    for src in sorted(OVERLAY.rglob("*")):
        if src.is_dir():
            continue
        dst = root / src.relative_to(OVERLAY)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        os.chmod(dst, 0o644)
    lib = root / "usr/lib/homenode"
    lib.mkdir(parents=True, exist_ok=True)
    for name in ("setup.py", "bootconfig.py"):
        shutil.copy2(DEVICE / name, lib / name)
    (root / "etc/homenode").mkdir(exist_ok=True)
    shutil.copy2(BOOT_TEMPLATE, root / "boot/firmware/homenode.toml")


def chroot(root: Path, script: str) -> None:
    """Run a shell script in the arm64 tree with /dev and /proc mounted (and always unmounted)."""
    mounted = []
    try:
        for args, target in ((["--bind", "/dev"], root / "dev"), (["-t", "proc", "proc"], root / "proc")):
            target.mkdir(exist_ok=True)
            subprocess.run(["mount", *args, str(target)], check=True)
            mounted.append(target)
        subprocess.run(["chroot", str(root), "/bin/sh", "-c", script], check=True)
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], check=False)


def finish_system(root: Path) -> None:
    (root / "etc/fstab").write_text(FSTAB)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # a fresh machine id at first boot on every card (ConditionFirstBoot semantics)
    (root / "etc/machine-id").write_text("uninitialized\n")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # build-only dpkg speed-up must not survive onto the device (power cuts during upgrades)
    cfg = root / "etc/dpkg/dpkg.cfg.d/99mmdebstrap"
    if cfg.exists():
        lines = [x for x in cfg.read_text().splitlines() if "unsafe-io" not in x]
        cfg.write_text("\n".join(lines) + "\n")
    for d in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
        for p in (root / d).glob("*"):
            if p.is_file() or p.is_symlink():
                p.unlink()
    for p in (root / "var/cache/apt").glob("*.bin"):
        p.unlink()
    (root / "var/lib/homenode").mkdir(mode=0o750, exist_ok=True)


def cmdline(root: Path) -> str:
    """The Pi's cmdline.txt: root by label, serial console last (it gets /dev/console)."""
    return ("console=tty1 console=serial0,115200 root=LABEL=rootfs rootfstype=ext4 rw rootwait "
            "fsck.repair=yes net.ifnames=0 panic=10\n")


def write_boot_files(root: Path) -> None:
    fw = root / "boot/firmware"
    (fw / "cmdline.txt").write_text(cmdline(root))


def manifest(root: Path) -> str:
    out = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
         "-f=${Package}\t${Version}\t${Architecture}\n"],
        capture_output=True, text=True, check=True).stdout
    lines = ["# homenode image manifest: Debian packages (name, version, arch)", out.rstrip(),
             "", "# Python packages in /opt/homenode (pinned wheels)"]
    lines += pydeps.freeze(root)
    return "\n".join(lines) + "\n"


def exposure(root: Path) -> str | None:
    """`systemd-analyze security` of the node unit (offline, host tool), e.g. '1.7 OK'."""
    unit = root / "etc/systemd/system/homenode.service"
    try:
        out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Overall exposure level for \S+: (\S+ \S+)", out.stdout)
    return m.group(1) if m else None


def clamp_mtimes(root: Path, epoch: int) -> None:
    """Files newer than SOURCE_DATE_EPOCH get it as mtime (reproducible filesystem images)."""
    subprocess.run(["find", str(root), "-newermt", f"@{epoch}", "-exec", "touch", "--no-dereference",
                    f"--date=@{epoch}", "{}", "+"], check=True)


def customize(tarball: Path, root: Path, repo: Path, cache: Path, work: Path, epoch: int,
              progress: Progress) -> tuple[str, str | None]:
    """Build the final root tree in `root`; returns (manifest text, unit exposure score)."""
    progress.note("unpacking the base rootfs")
    unpack_base(tarball, root, progress)
    wheels = pydeps.download_wheels(cache, progress)
    progress.note("building the homenode wheel from the working tree")
    whl = pydeps.build_homenode_wheel(repo, work / "wheel", progress)
    progress.note(f"installing {whl.name} and pinned wheels into /opt/homenode")
    pydeps.install_venv(root, wheels, whl, progress)
    copy_overlay(root)
    pydeps.compile_bytecode([root / pydeps.VENV / "lib", root / "usr/lib/homenode"], progress)
    progress.note("users, services (in the arm64 chroot)")
    chroot(root, CHROOT_SCRIPT)
    finish_system(root)
    write_boot_files(root)
    text = manifest(root)
    share = root / "usr/share/homenode"
    share.mkdir(parents=True, exist_ok=True)
    (share / "manifest.txt").write_text(text)
    readme = repo / "README.md"
    if readme.exists():
        doc = root / "usr/share/doc/homenode"
        doc.mkdir(parents=True, exist_ok=True)
        shutil.copy2(readme, doc / "README.md")
    score = exposure(root)
    progress.note(f"systemd-analyze security homenode.service: exposure {score}")
    clamp_mtimes(root, epoch)
    return text, score
