"""`homenode flash IMAGE DEVICE`: write the SD image to a card safely, then prove it by reading back.

Why our own tool: operators are not expected to know `dd`, and `dd` happily overwrites the wrong
disk. This one streams the `.img.xz` (no temporary file), refuses the disk the running system
lives on, refuses non-removable disks unless --force, shows model and size and asks before
writing, and verifies the card by reading it back (sha256) after dropping the page cache.
A plain file is a valid target (written sparse): that is how the tests and QEMU use it.

Logic and I/O are apart: `inspect_target` reads sysfs/mounts through paths it is given (tests
pass a fake sysfs tree), `refusal` is pure, `write_image`/`verify` work on any file objects.
"""

import argparse
import hashlib
import lzma
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20
ZERO = bytes(CHUNK)


class FlashError(Exception):
    """Something stops the flash; the message says what and how to fix it."""


@dataclass
class Target:
    path: str
    is_block: bool
    size: int | None = None          # bytes; None for a plain file
    model: str = ""
    removable: bool = False
    holds_system: bool = False       # the running system's root (or /boot, /usr) is on it
    mounted: list[str] = field(default_factory=list)  # "partition on mountpoint"

    def describe(self) -> str:
        if not self.is_block:
            return f"{self.path} (a plain file)"
        size = f"{self.size / 1e9:.1f} GB" if self.size else "unknown size"
        kind = "removable" if self.removable else "NOT removable"
        return f"{self.path}: {self.model or 'unknown model'}, {size}, {kind}"


# --- inspecting the target (sysfs + mounts, paths injectable for tests) -----------------------

def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _disk_of(dev_name: str, sys_root: Path) -> str:
    """Whole-disk name of a block device name (sda1 -> sda, mmcblk0p2 -> mmcblk0)."""
    node = sys_root / "class/block" / dev_name
    if (node / "partition").exists():
        return node.resolve().parent.name
    return dev_name


def _name_of_devnum(devnum: str, sys_root: Path) -> str | None:
    link = sys_root / "dev/block" / devnum
    return link.resolve().name if link.exists() else None


def system_disks(mounts_text: str, sys_root: Path, devnums: dict[str, str]) -> set[str]:
    """Disks holding /, /boot, /usr or /boot/firmware of the running system.

    `devnums` maps those mount points to "major:minor" (from stat) so that root on a device
    that /proc/mounts names oddly (/dev/root) is still found.
    """
    disks = set()
    for devnum in devnums.values():
        name = _name_of_devnum(devnum, sys_root)
        if name:
            disks.add(_disk_of(name, sys_root))
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in ("/", "/boot", "/usr", "/boot/firmware") \
                and parts[0].startswith("/dev/"):
            name = Path(parts[0]).name
            if (sys_root / "class/block" / name).exists():
                disks.add(_disk_of(name, sys_root))
    return disks


def inspect_target(path: str, sys_root: Path = Path("/sys"), mounts_text: str | None = None,
                   devnums: dict[str, str] | None = None) -> Target:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Target(path, is_block=False)
    if stat.S_ISDIR(st.st_mode):
        raise FlashError(f"{path} is a directory; give a device such as /dev/sdX or a file name")
    if not stat.S_ISBLK(st.st_mode):
        return Target(path, is_block=False)
    devnum = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    name = _name_of_devnum(devnum, sys_root) or Path(os.path.realpath(path)).name
    node = sys_root / "class/block" / name
    if (node / "partition").exists():
        disk = _disk_of(name, sys_root)
        raise FlashError(f"{path} is a partition; give the whole card: /dev/{disk}")
    if mounts_text is None:
        mounts_text = _read(Path("/proc/mounts"))
    if devnums is None:
        devnums = {}
        for mp in ("/", "/boot", "/usr", "/boot/firmware"):
            try:
                d = os.stat(mp).st_dev
                devnums[mp] = f"{os.major(d)}:{os.minor(d)}"
            except OSError:
                pass
    size = int(_read(node / "size", "0")) * 512
    model = " ".join(x for x in (_read(node / "device/vendor"), _read(node / "device/model"),
                                 _read(node / "device/name")) if x)
    removable = _read(node / "removable") == "1" or _read(node / "device/type") == "SD"
    mounted = []
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("/dev/"):
            dev = Path(parts[0]).name
            if (sys_root / "class/block" / dev).exists() and _disk_of(dev, sys_root) == name:
                mounted.append(f"{parts[0]} on {parts[1]}")
    holds = name in system_disks(mounts_text, sys_root, devnums)
    return Target(path, True, size, model, removable, holds, mounted)


def refusal(target: Target, force: bool, image_size: int | None) -> str | None:
    """Why this target must not be written (None: go ahead). Pure."""
    if not target.is_block:
        return None
    if target.holds_system:
        return (f"{target.path} holds the running system: refusing to overwrite it "
                "(check the device name with lsblk)")
    if target.mounted:
        return (f"{target.path} is in use: " + ", ".join(target.mounted)
                + f"; unmount it first (e.g. umount {target.mounted[0].split()[0]})")
    if not target.removable and not force:
        return (f"{target.path} is not a removable disk ({target.model or 'unknown model'}); "
                "if you are sure it is your SD card reader, add --force")
    if image_size and target.size is not None and image_size > target.size:
        return (f"the image needs {image_size / 1e9:.2f} GB but {target.path} has only "
                f"{target.size / 1e9:.2f} GB: use a bigger card")
    return None


# --- the image ---------------------------------------------------------------------------------

def image_size(image: str) -> int | None:
    """Uncompressed size: the file size, or from the .xz index (`xz --robot --list`)."""
    if not image.endswith(".xz"):
        return os.path.getsize(image)
    try:
        out = subprocess.run(["xz", "--robot", "--list", image], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        f = line.split("\t")
        if f[0] == "totals" and len(f) > 4 and f[4].isdigit():
            return int(f[4])
    return None


def image_chunks(f, compressed: bool, on_read=None):
    """Yield the image's bytes in chunks from an open file (decompressing .xz on the fly)."""
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ) if compressed else None
    while True:
        if dec is not None and not dec.needs_input:
            data = dec.decompress(b"", CHUNK)
        else:
            raw = f.read(CHUNK)
            if on_read:
                on_read(len(raw))
            if not raw:
                if dec is not None and not dec.eof:
                    raise FlashError("the image file is truncated (incomplete download?); "
                                     "download it again and check its .sha256")
                return
            data = dec.decompress(raw, CHUNK) if dec is not None else raw
        if data:
            yield data
        if dec is not None and dec.eof:
            return


def write_image(chunks, out, sparse: bool) -> tuple[int, str]:
    """Write all chunks to `out` (seeking over zero blocks if sparse). Returns (bytes, sha256)."""
    h = hashlib.sha256()
    n = 0
    pending = b""
    for data in chunks:
        pending += data
        while len(pending) >= CHUNK:
            block, pending = pending[:CHUNK], pending[CHUNK:]
            _put(out, block, sparse)
            h.update(block)
            n += len(block)
    if pending:
        _put(out, pending, sparse)
        h.update(pending)
        n += len(pending)
    if sparse:
        out.truncate(n)
    out.flush()
    os.fsync(out.fileno())
    return n, h.hexdigest()


def _put(out, block: bytes, sparse: bool) -> None:
    if sparse and block == ZERO[: len(block)]:
        out.seek(len(block), os.SEEK_CUR)
    else:
        out.write(block)


def verify(path: str, size: int, expected: str, on_read=None) -> None:
    """Read `size` bytes back from the device (page cache dropped first) and compare sha256."""
    with open(path, "rb", buffering=0) as f:
        try:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        h = hashlib.sha256()
        left = size
        while left:
            data = f.read(min(CHUNK, left))
            if not data:
                raise FlashError(f"{path} ended after {size - left} of {size} bytes while "
                                 "verifying: the card is smaller than it claims or failing")
            h.update(data)
            left -= len(data)
            if on_read:
                on_read(len(data))
    if h.hexdigest() != expected:
        raise FlashError(f"verification failed: what {path} holds differs from the image "
                         "(a bad or fake card?). Try again or use another card.")


# --- progress and the command -----------------------------------------------------------------

class Bar:
    def __init__(self, label: str, total: int | None, out=sys.stderr):
        self.label, self.total, self.out = label, total, out
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.5 or (self.total and self.done >= self.total):
            self._last = now
            self.draw()

    def draw(self, end: str = "") -> None:
        rate = self.done / max(time.monotonic() - self.start, 1e-6) / 1e6
        if self.total:
            pct = min(100, 100 * self.done // self.total)
            bar = "#" * (pct * 30 // 100)
            self.out.write(f"\r{self.label} [{bar:<30}] {pct:3d}% {rate:6.1f} MB/s{end}")
        else:
            self.out.write(f"\r{self.label} {self.done / 1e6:8.0f} MB {rate:6.1f} MB/s{end}")
        self.out.flush()

    def finish(self) -> None:
        self.draw("\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="the image: homenode-<version>-arm64.img.xz (or a raw .img)")
    p.add_argument("device", help="the SD card, e.g. /dev/sdb or /dev/mmcblk0 (whole disk, not "
                   "a partition), or a file name to write an image file")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true",
                   help="allow a disk that does not report itself as removable")
    p.add_argument("--no-verify", action="store_true", help="skip reading the card back")


def run(args, stdin=sys.stdin, out=sys.stderr) -> int:
    try:
        return _flash(args, stdin, out)
    except FlashError as e:
        print(f"homenode flash: {e}", file=out)
        return 1
    except PermissionError as e:
        print(f"homenode flash: {e.filename}: permission denied; run it with sudo", file=out)
        return 1
    except KeyboardInterrupt:
        print("\nhomenode flash: interrupted; the card is incomplete, flash it again", file=out)
        return 130


def _flash(args, stdin, out) -> int:
    if not os.path.isfile(args.image):
        raise FlashError(f"{args.image}: no such image file")
    compressed = args.image.endswith(".xz")
    size = image_size(args.image)
    target = inspect_target(args.device)
    why = refusal(target, args.force, size)
    if why:
        raise FlashError(why)
    print(f"image:  {args.image}" + (f" ({size / 1e9:.2f} GB)" if size else ""), file=out)
    print(f"target: {target.describe()}", file=out)
    exists = target.is_block or (os.path.exists(args.device) and os.path.getsize(args.device))
    if exists and not args.yes:
        if not stdin.isatty():
            raise FlashError("not asking on a non-interactive input: add --yes to confirm")
        print(f"Everything on {args.device} will be overwritten. Type 'yes' to continue: ",
              end="", file=out, flush=True)
        if stdin.readline().strip().lower() != "yes":
            raise FlashError("cancelled; nothing was written")
    flags = os.O_WRONLY | (os.O_EXCL if target.is_block else os.O_CREAT | os.O_TRUNC)
    try:
        fd = os.open(args.device, flags, 0o644)
    except OSError as e:
        if target.is_block and e.errno == 16:
            raise FlashError(f"{args.device} is busy (mounted or in use); unmount it") from None
        raise
    src_total = os.path.getsize(args.image)
    bar = Bar("writing  ", src_total, out)
    with open(args.image, "rb") as src, os.fdopen(fd, "wb") as dst:
        n, digest = write_image(image_chunks(src, compressed, bar), dst, not target.is_block)
    bar.finish()
    if not args.no_verify:
        vbar = Bar("verifying", n, out)
        verify(args.device, n, digest, vbar)
        vbar.finish()
    print(f"done: {n / 1e9:.2f} GB written" + ("" if args.no_verify else ", verified")
          + (f" (sha256 {digest[:16]}...)"), file=out)
    if target.is_block:
        print("You can remove the card now. To preset Wi-Fi or an SSH key, edit homenode.toml "
              "on its boot partition first.", file=out)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="homenode flash", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
