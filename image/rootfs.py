"""Stage 1: the base arm64 root filesystem, built once per definition and cached as a tarball.

mmdebstrap runs the arm64 maintainer scripts through qemu-user-static (binfmt_misc). The result
depends only on image/base.py (packages, hooks), so it is cached under the machine-level cache
dir as base-<hash>.tar.zst; .deb downloads are cached in apt-archives/<hash of package list>/.
"""

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from image import base
from image.progress import Progress

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def ensure_binfmt(progress: Progress) -> None:
    """Mount binfmt_misc and register aarch64 if needed; fail with a fix if arm64 cannot run."""
    if not (BINFMT_DIR / "register").exists():
        progress.note("mounting binfmt_misc")
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], check=True)
    if not (BINFMT_DIR / "qemu-aarch64").exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False)
    check = subprocess.run(["arch-test", "arm64"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(
            "image: this machine cannot run arm64 binaries (" + check.stdout.strip() + ").\n"
            "  fix: apt-get install qemu-user-static binfmt-support arch-test, then "
            "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc")


def mmdebstrap_version() -> str:
    out = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def base_key() -> str:
    """Hash of everything the base tree depends on."""
    h = hashlib.sha256()
    h.update(Path(base.__file__).read_bytes())
    h.update(mmdebstrap_version().encode())
    return h.hexdigest()[:16]


def archive_key() -> str:
    text = "\n".join(base.SOURCES + base.PACKAGES)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mmdebstrap_command(target: Path, archives: Path) -> list[str]:
    cmd = [
        "mmdebstrap", "--mode=root", "--variant=minbase", f"--architectures={base.ARCH}",
        f"--components={base.COMPONENTS}", "--include=" + ",".join(base.PACKAGES),
        "--dpkgopt=force-unsafe-io", "--aptopt=Acquire::Retries \"3\"",
        "--skip=download/empty",
        "--setup-hook=mkdir -p \"$1/var/cache/apt/archives/\"",
        f"--setup-hook=sync-in {shlex.quote(str(archives))} /var/cache/apt/archives/",
        "--essential-hook=" + base.ESSENTIAL_HOOK,
        "--customize-hook=" + base.customize_hook(),
        f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(archives))}",
    ]
    cmd += [f"--dpkgopt={opt}" for opt in base.DPKG_EXCLUDES]
    cmd += [base.SUITE, str(target)]
    cmd += list(base.SOURCES)
    return cmd


def build_base(cache: Path, work: Path, progress: Progress, refresh: bool = False) -> Path:
    """Return the path of the cached base tarball, building it if it is missing."""
    ensure_binfmt(progress)
    tarball = cache / f"base-{base_key()}.tar.zst"
    if tarball.exists() and not refresh:
        progress.note(f"base rootfs from cache: {tarball}")
        return tarball
    archives = cache / "apt-archives" / archive_key()
    archives.mkdir(parents=True, exist_ok=True)
    tree = work / "base-tree"
    if tree.exists():
        shutil.rmtree(tree)
    env = dict(os.environ, LC_ALL="C.UTF-8")
    progress.run(mmdebstrap_command(tree, archives), env=env, label="mmdebstrap")
    tmp = tarball.with_suffix(".partial")
    progress.note(f"caching base rootfs as {tarball}")
    with open(tmp, "wb") as out:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
             "--sort=name", "-C", str(tree), "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-q", "-T0", "-3"], stdin=tar.stdout, stdout=out, check=True)
        if tar.wait() != 0:
            raise SystemExit("image: archiving the base tree failed")
    tmp.rename(tarball)
    shutil.rmtree(tree)
    return tarball
