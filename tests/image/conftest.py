"""Fixtures for the image tests: the SD image and its update bundle (built in the session if
dist/ lacks a current one), the TEST signing key, a loopback HTTP server the guests reach, an
SSH key, and the boot-timing record."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 3600
# The tests boot the raw image: no .img.xz (minutes of xz on 2 cores); the bundle's squashfs at
# zstd -3 instead of the release's -19 (same content, ~10 % bigger, seconds instead of minutes)
TEST_BUILD_ARGS = ["--no-xz", "--bundle-zstd-level", "3"]


@dataclass
class Image:
    raw: Path
    bundle: Path
    slots: Path
    info: dict

    @property
    def signing(self):
        from image.keys import SigningKey

        k = self.info["test_key"]
        return SigningKey(Path(k["cert"]), Path(k["key"]), test=True)


def _current(dist: Path, stem: str, source_hash: str) -> dict | None:
    info = dist / f"{stem}.build.json"
    if not (info.exists() and (dist / f"{stem}.img").exists()
            and (dist / f"{stem}.raucb").exists()):
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
            proc = subprocess.run([sys.executable, "-m", "image.build", *TEST_BUILD_ARGS],
                                  cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=BUILD_TIMEOUT)
        if proc.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
            pytest.fail(f"image build failed (exit {proc.returncode}); {log}:\n{tail}")
        # what was just built (sources edited meanwhile do not make it stale for this session)
        info = json.loads((dist / f"{stem}.build.json").read_text())
    if info.get("keys") != "test":
        pytest.fail("dist/ holds a release image (release keys): the update tests need a test "
                    "build; run the tests on a clean dist/")
    return Image(dist / f"{stem}.img", dist / f"{stem}.raucb", dist / f"{stem}.slots", info)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory) -> tuple[Path, str]:
    """(private key, public line) to put into homenode.toml's [ssh] authorized_keys."""
    d = tmp_path_factory.mktemp("ssh")
    key = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, (d / "id_ed25519.pub").read_text().strip()


class Served:
    """A directory served over HTTP on 127.0.0.1 (QEMU user networking: 10.0.2.2 in a guest)."""

    def __init__(self, root: Path):
        import functools
        import http.server
        import threading

        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def guest_url(self, name: str) -> str:
        return f"http://10.0.2.2:{self.port}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _quiet_handler_base():
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    return Handler


_QuietHandler = _quiet_handler_base()


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("www"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def boot_times():
    """Collects per-boot timings; written to dist/<stem>.qemu-times.json at the end."""
    times: list[dict] = []
    yield times
    if times:
        from image import build
        out = REPO / "dist" / f"{build.stem()}.qemu-times.json"
        out.write_text(json.dumps(times, indent=2) + "\n")
