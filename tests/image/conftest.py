"""Fixtures for the image tests: the SD image (built in the session if dist/ lacks a current one),
booted guests, and the host `homenode` CLI pointed at a guest's forwarded port."""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from qemu.harness import Machine

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
        info = _current(dist, stem, build.source_hash())
        assert info is not None, "the build finished but dist/ has no current image"
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


def homenode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The host CLI (this checkout's firmware package), bounded by a timeout."""
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


class Guest:
    """A booted image plus the node id it announced; helpers call the host CLI against it."""

    def __init__(self, machine: Machine):
        self.m = machine
        self.node_id = ""

    @staticmethod
    def machine(image: Path, workdir: Path, card_mib: int, copy: bool = True) -> Machine:
        """A guest whose disk is a copy of `image` (or `image` itself) grown to `card_mib`."""
        return Machine(image, workdir, disk_size_mib=card_mib, copy=copy)

    @property
    def node_addr(self) -> str:
        return f"127.0.0.1:{self.m.ports['node']}"

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return homenode(args[0], "--node", self.node_addr, "--node-id", self.node_id,
                        "--timeout", "20", *args[1:], timeout=timeout)

    def status(self) -> dict:
        r = self.cli("status", "--json")
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        return json.loads(r.stdout)

    def boot(self, timeout: float = 900) -> dict:
        """Start the guest and wait for: kernel, multi-user, setup done, node serving.
        Returns the node's status. Timings land in self.m.seen (seconds after QEMU start)."""
        m = self.m
        t0 = time.monotonic()
        m.start()
        m.wait_console(r"Booting Linux|Linux version", 120, "kernel")
        self.node_id = m.wait_console(r"homenode-setup: node id ([0-9a-f]{64})", timeout,
                                      "setup-done").group(1)
        up = m.wait_console(r"homenode-boot: multi-user reached at ([0-9.]+) s, node (\S+)",
                            timeout, "multi-user")
        m.seen["guest_uptime_multi_user"] = float(up.group(1))
        assert up.group(2) == "active", f"homenode.service is {up.group(2)}\n" + m.tail()

        def ready():
            st = self.status()
            return st if st.get("state") == "serving" else None

        st = m.wait_until(ready, max(60.0, timeout - (time.monotonic() - t0)),
                          "node serving (homenode status through the forwarded port)",
                          "node-ready", interval=3)
        return st
