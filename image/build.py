"""Build the homenode SD image: `python3 -m image.build` (or `bash image/build.sh`), as root.

Stages: [1] base rootfs (mmdebstrap, cached), [2] homenode root, [3] slot images and disk
image, [4] signed update bundle, [5] compression and publish files. Output in dist/:
  homenode-<version>-arm64.img.xz (+ .sha256), .img (raw, sparse; for QEMU and bmaptool),
  .raucb (the same system as an update bundle), .slots/ (its boot.vfat and root.ext4),
  .bmap, .rpi-imager.json, .manifest.txt, .build.json (stage times, sizes, source hash).

Signing: with --release-cert (and --sign-key to sign the bundle) the image trusts the release
key; without, it trusts this machine's TEST key (made once in the cache) and says so in its
name and release record: such an image is for tests, never for release.

Cache (outside the repo, survives between runs): $HOMENODE_IMAGE_CACHE or
/var/cache/homenode-image — base-<hash>.tar.zst (the base rootfs; its key hashes image/base.py),
apt-archives/<hash>/ (.debs, keyed by the package list), wheels/<hash>/ (pinned aarch64 wheels,
lgpio cross-built), test-keys/ (the TEST signing key).
"""

import argparse
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from image import assemble, bundle, customize, keys, publish, rootfs
from image.progress import Progress, fmt_secs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = "/var/cache/homenode-image"
# inputs of the image: a change in any of them makes dist/ stale (tests rebuild)
SOURCE_PATHS = ("image", "firmware", "hal", "pyproject.toml")


def version(repo: Path = REPO) -> str:
    with open(repo / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def stem(repo: Path = REPO) -> str:
    return f"homenode-{version(repo)}-arm64"


def source_hash(repo: Path = REPO) -> str:
    """Hash of every file the image is built from (working tree, committed or not)."""
    h = hashlib.sha256()
    for top in SOURCE_PATHS:
        p = repo / top
        files = [p] if p.is_file() else sorted(
            f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
            and f.suffix not in (".pyc",))
        for f in files:
            h.update(str(f.relative_to(repo)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def source_date_epoch(repo: Path) -> int:
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%ct"],
                         capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else 0


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python3 -m image.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dist", type=Path, default=REPO / "dist", help="output directory")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("HOMENODE_IMAGE_CACHE", DEFAULT_CACHE)),
                    help="download/base cache (default $HOMENODE_IMAGE_CACHE or %(default)s)")
    ap.add_argument("--refresh-base", action="store_true",
                    help="rebuild the base rootfs even if cached (e.g. for security updates)")
    ap.add_argument("--base-url", default=os.environ.get("HOMENODE_IMAGE_BASE_URL"),
                    help="where the .img.xz will be downloadable from (Imager JSON 'url'); "
                         "default: file:// URL of the dist directory")
    ap.add_argument("--xz-level", type=int, choices=range(0, 10), metavar="0-9",
                    default=int(os.environ.get("HOMENODE_IMAGE_XZ_LEVEL", "6")),
                    help="xz preset (default $HOMENODE_IMAGE_XZ_LEVEL or 6; the test suite uses "
                         "1: 5x faster, ~15%% bigger)")
    ap.add_argument("--no-raw", action="store_true", help="delete the raw .img afterwards")
    ap.add_argument("--no-xz", action="store_true",
                    help="only the raw .img and the bundle: no .img.xz, .bmap, Imager JSON (the "
                         "test suite boots the raw image; saves minutes of xz)")
    ap.add_argument("--release-cert", type=Path, metavar="PEM",
                    help="release certificate the image trusts for updates (default: this "
                         "machine's TEST key: a test image)")
    ap.add_argument("--sign-key", type=Path, metavar="PEM",
                    help="private key of --release-cert: sign the update bundle (without it no "
                         "bundle is made for a release build)")
    ap.add_argument("--index-url", default=os.environ.get("HOMENODE_RELEASE_INDEX_URL", ""),
                    help="the release channel's signed index the image checks (default "
                         "$HOMENODE_RELEASE_INDEX_URL; empty: none until set in homenode.toml)")
    ap.add_argument("--bundle-zstd-level", type=int, default=bundle.DEFAULT_ZSTD_LEVEL,
                    help="zstd level of the bundle's squashfs (default %(default)s; tests 3)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("image: the build needs root (mmdebstrap --mode=root, chroot, file ownership); "
              "run it with sudo", file=sys.stderr)
        return 2
    dist = args.dist.resolve()
    dist.mkdir(parents=True, exist_ok=True)
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / "work"
    work.mkdir(exist_ok=True)
    lock = open(cache / ".build.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"image: another build is using {cache}; waiting for it", file=sys.stderr)
        fcntl.flock(lock, fcntl.LOCK_EX)
    epoch = source_date_epoch(REPO)
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    name = stem()
    src_hash = source_hash()
    if args.release_cert:
        signing = keys.release_key(args.release_cert.resolve(),
                                   args.sign_key.resolve() if args.sign_key else None)
    else:
        signing = keys.test_key(cache)
    progress = Progress(5)
    progress.note(f"building {name} (source {src_hash}, SOURCE_DATE_EPOCH={epoch}); "
                  f"cache {cache}")
    if signing.test:
        progress.note(f"TEST KEYS: this image trusts the test key {signing.cert} - not for "
                      "release (give --release-cert for a release)")
    base_cached = (cache / f"base-{rootfs.base_key()}.tar.zst").exists() and not args.refresh_base
    with progress.stage("rootfs", "base root filesystem (mmdebstrap, arm64 under emulation)"
                        + (" - cached" if base_cached else " - cold: 10-20 min")):
        tarball = rootfs.build_base(cache, work, progress, refresh=args.refresh_base)
    root = work / "rootfs"
    with progress.stage("customize", "homenode root (node, units, users)"):
        text, score = customize.customize(tarball, root, REPO, cache, work, epoch, progress,
                                          version=version(), build=src_hash, signing=signing,
                                          index_url=args.index_url)
        (dist / f"{name}.manifest.txt").write_text(text)
    raw = dist / f"{name}.img"
    slots_dir = dist / f"{name}.slots"
    with progress.stage("assemble", "slot images and disk image (MBR: bootfs, A/B slots, data)"):
        uid = _owner(root, "homenode")
        layout = assemble.assemble(root, work, raw, slots_dir, uid, epoch, progress)
    raucb = dist / f"{name}.raucb"
    with progress.stage("bundle", "signed update bundle (RAUC, verity, zstd)"):
        if signing.key is not None:
            bundle.make_bundle(slots_dir / "boot.vfat", slots_dir / "root.ext4", raucb,
                               version(), src_hash, signing, work,
                               zstd_level=args.bundle_zstd_level,
                               description=f"homenode {version()}")
            progress.note(f"{raucb.name}: {raucb.stat().st_size / (1 << 20):.0f} MiB")
        else:
            raucb.unlink(missing_ok=True)
            progress.note("no --sign-key: no bundle (sign one later with python3 -m "
                          "image.release bundle)")
    base_url = args.base_url or f"file://{dist}"
    with progress.stage("compress", "xz, sha256, bmap, Raspberry Pi Imager JSON"):
        if args.no_xz:
            for old in (dist / f"{name}.img.xz", dist / f"{name}.img.xz.sha256"):
                old.unlink(missing_ok=True)
            out = {"xz": None, "extract_sha256": None}
            progress.note("--no-xz: raw image only")
        else:
            out = publish.publish(raw, dist, name, version(), epoch, base_url,
                                  Path(__file__).with_name("icon.png"), progress, args.xz_level,
                                  test_keys=signing.test)
    info = {
        "name": name, "version": version(), "source_hash": src_hash, "base_key": rootfs.base_key(),
        "base_cached": base_cached, "unit_exposure": score, "source_date_epoch": epoch,
        "stage_seconds": progress.times, "total_seconds": round(time.monotonic() - progress.start, 1),
        "layout_mib": {"bootfs": layout.bootfs_mib, "boot_slot": layout.boot_slot_mib,
                       "root_slot": layout.root_slot_mib, "data": layout.data_mib},
        "root_fs_bytes": (slots_dir / "root.ext4").stat().st_size,
        "bundle_bytes": raucb.stat().st_size if raucb.exists() else None,
        "keys": "test" if signing.test else "release",
        "test_key": {"cert": str(signing.cert), "key": str(signing.key)} if signing.test else None,
        "index_url": args.index_url,
        "raw_bytes": raw.stat().st_size, "raw_allocated_bytes": raw.stat().st_blocks * 512,
        "xz_bytes": out["xz"].stat().st_size if out["xz"] else None,
        "extract_sha256": out["extract_sha256"],
    }
    (dist / f"{name}.build.json").write_text(json.dumps(info, indent=2) + "\n")
    if args.no_raw:
        raw.unlink()
    subprocess.run(["rm", "-rf", str(root)], check=False)
    done = out["xz"] or raw
    progress._print(f"image: {done} ({done.stat().st_size / (1 << 20):.0f} MiB) in "
                    f"{fmt_secs(info['total_seconds'])}; stages: "
                    + ", ".join(f"{k} {fmt_secs(v)}" for k, v in progress.times.items()))
    return 0


def _owner(root: Path, user: str) -> str:
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == user:
            return f"{f[2]}:{f[3]}"
    raise SystemExit(f"image: user {user} missing from the image")


if __name__ == "__main__":
    sys.exit(main())
