"""Stage 4: what gets published next to the image.

`.img.xz` (streamed through `xz -T0` with a progress bar), its `.sha256`, a block map for
`bmaptool copy`, and a Raspberry Pi Imager repository JSON (`os_list`) describing it.
"""

import datetime
import hashlib
import json
import subprocess
from pathlib import Path

from image.progress import Progress

CHUNK = 4 << 20
# Pi 3/3+/Zero 2 W and Pi 4. Not the Pi 5: Debian 13's kernel has no driver for its SD card
# host (MMC_SDHCI_BRCMSTB) nor for RP1 (Ethernet, USB, GPIO), see README.
IMAGER_DEVICES = ["pi4-64bit", "pi3-64bit"]
DESCRIPTION = ("A home node of a private-messenger network: stores and onion-relays end-to-end "
               "encrypted messages. Edit homenode.toml on the boot partition for Wi-Fi and SSH.")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def compress(image: Path, out: Path, progress: Progress, level: int = 6) -> str:
    """xz the raw image; returns the sha256 of the raw image (computed on the same pass)."""
    total = image.stat().st_size
    h = hashlib.sha256()
    tmp = out.with_name(out.name + ".partial")
    with open(image, "rb") as src, open(tmp, "wb") as dst:
        xz = subprocess.Popen(["xz", "-T0", f"-{level}", "-c"], stdin=subprocess.PIPE, stdout=dst)
        assert xz.stdin is not None
        done = 0
        while chunk := src.read(CHUNK):
            h.update(chunk)
            xz.stdin.write(chunk)
            done += len(chunk)
            progress.bar("xz", done, total)
        xz.stdin.close()
        if xz.wait() != 0:
            raise SystemExit("image: xz failed")
    tmp.rename(out)
    return h.hexdigest()


def bmap(image: Path, out: Path) -> None:
    subprocess.run(["bmaptool", "create", "-o", str(out), str(image)], check=True,
                   capture_output=True)


def imager_json(xz: Path, extract_size: int, extract_sha256: str, version: str, epoch: int,
                base_url: str, icon_url: str, test_keys: bool = False) -> dict:
    release = datetime.datetime.fromtimestamp(epoch, datetime.UTC).date().isoformat()
    return {"os_list": [{
        "name": f"homenode {version} (64-bit)" + (" - TEST KEYS, not a release" if test_keys
                                                  else ""),
        "description": DESCRIPTION,
        "icon": icon_url,
        "url": base_url.rstrip("/") + "/" + xz.name,
        "extract_size": extract_size,
        "extract_sha256": extract_sha256,
        "image_download_size": xz.stat().st_size,
        "image_download_sha256": sha256_file(xz),
        "release_date": release,
        "devices": IMAGER_DEVICES,
        "init_format": "none",
    }]}


def publish(image: Path, dist: Path, stem: str, version: str, epoch: int, base_url: str,
            icon: Path, progress: Progress, level: int = 6, test_keys: bool = False) -> dict:
    xz = dist / f"{stem}.img.xz"
    extract_sha = compress(image, xz, progress, level)
    progress.note(f"{xz.name}: {xz.stat().st_size / (1 << 20):.0f} MiB "
                  f"(raw {image.stat().st_size / (1 << 20):.0f} MiB)")
    sums = dist / f"{stem}.img.xz.sha256"
    sums.write_text(f"{sha256_file(xz)}  {xz.name}\n")
    bm = dist / f"{stem}.bmap"
    bmap(image, bm)
    icon_dst = dist / "homenode-icon.png"
    icon_dst.write_bytes(icon.read_bytes())
    repo = dist / f"{stem}.rpi-imager.json"
    repo.write_text(json.dumps(imager_json(xz, image.stat().st_size, extract_sha, version, epoch,
                                           base_url, base_url.rstrip("/") + "/" + icon_dst.name,
                                           test_keys),
                               indent=2) + "\n")
    return {"xz": xz, "sha256": sums, "bmap": bm, "imager": repo, "extract_sha256": extract_sha}
