"""Fixtures for the image tests: the SD image (built in the session if dist/ lacks a current one)
and the boot-timing record."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 3600
# xz -1 instead of the release's -6: ~5x faster on 2 cores, ~15 % bigger; same image inside
TEST_XZ_LEVEL = "1"


@dataclass
class Image:
    raw: Path
    xz: Path
    info: dict


def _current(dist: Path, stem: str, source_hash: str) -> dict | None:
    info = dist / f"{stem}.build.json"
    if not (info.exists() and (dist / f"{stem}.img").exists()
            and (dist / f"{stem}.img.xz").exists()):
        return None
    data = json.loads(info.read_text())
    if os.environ.get("HOMENODE_TEST_ANY_IMAGE") == "1":  # developer shortcut: skip staleness
        return data
    return data if data.get("source_hash") == source_hash else None


@pytest.fixture(scope="session")
def sd_image() -> Image:
    """dist/homenode-<v>-arm64.img(.xz) for the current sources; builds it when missing/stale
    (CI: a clean clone builds here, using the machine-level cache when present)."""
    from image import build

    dist, stem = REPO / "dist", build.stem()
    info = _current(dist, stem, build.source_hash())
    if info is None:
        if os.geteuid() != 0:
            pytest.fail("the image must be built (dist/ has no current one) and that needs root:"
                        " run `sudo bash image/build.sh` first, or the tests as root")
        dist.mkdir(exist_ok=True)
        log = dist / "build.log"
        with open(log, "w") as f:
            proc = subprocess.run([sys.executable, "-m", "image.build", "--xz-level",
                                   TEST_XZ_LEVEL], cwd=REPO, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
        if proc.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
            pytest.fail(f"image build failed (exit {proc.returncode}); {log}:\n{tail}")
        # what was just built (sources edited meanwhile do not make it stale for this session)
        info = json.loads((dist / f"{stem}.build.json").read_text())
    return Image(dist / f"{stem}.img", dist / f"{stem}.img.xz", info)


@pytest.fixture(scope="session")
def boot_times():
    """Collects per-boot timings; written to dist/<stem>.qemu-times.json at the end."""
    times: list[dict] = []
    yield times
    if times:
        from image import build
        out = REPO / "dist" / f"{build.stem()}.qemu-times.json"
        out.write_text(json.dumps(times, indent=2) + "\n")
