"""The release channel end to end on the host: a signed index (real keys, made as a maintainer
makes them), the download checked against it, the install through the updater, and what the
history keeps so a box neither replays an old index nor retries a refused release by itself.
RAUC is simulated (tests/update/simbox.py); the network is a dict of URLs (no sockets)."""

import hashlib
import io
import json
from pathlib import Path

import pytest

from firmware.update import sources
from firmware.update.index import IndexProblem
from firmware.update.rauc import RaucError
from firmware.update.status import History
from firmware.update.updater import UpdateDeferred, UpdateRefused
from image import keys
from tests.tools import require_tools

from .simbox import SimBox, bundle, updater

INDEX = "https://releases.homenode.invalid/stable/index.json"


@pytest.fixture(scope="module")
def release_key(tmp_path_factory):
    require_tools("openssl", package="openssl")
    d = tmp_path_factory.mktemp("keys")
    keys.make_key(d / "release.key.pem", d / "release.cert.pem", "/CN=homenode release test")
    return d


class Web:
    """`opener` for the channel: URL -> bytes, and which URLs were fetched."""

    def __init__(self):
        self.files, self.fetched = {}, []

    def __call__(self, url, timeout):
        self.fetched.append(url)
        if url not in self.files:
            raise OSError(f"{url}: HTTP 404")
        return io.BytesIO(self.files[url])


def publish(web, tmp_path, key_dir, generated, bundles):
    """Sign an index listing `bundles` ({version: path}, all security releases)."""
    releases = []
    for version, path in bundles.items():
        data = Path(path).read_bytes()
        web.files[f"https://releases.homenode.invalid/stable/{version}.raucb"] = data
        releases.append({"version": version, "security": True, "url": f"{version}.raucb",
                         "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    doc = tmp_path / f"index-{generated}.json"
    doc.write_text(json.dumps({"format": 1, "compatible": "homenode-rpi-arm64",
                               "generated": generated, "releases": releases}))
    web.files[INDEX] = doc.read_bytes()
    web.files[INDEX + ".sig"] = keys.sign_file(doc, key_dir / "release.key.pem").read_bytes()


@pytest.fixture
def box(tmp_path):
    return SimBox(tmp_path, "A", {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})


def check(u, web, key_dir, tmp_path, force=False):
    return sources.check_channel(u, INDEX, keyring=str(key_dir / "release.cert.pem"),
                                 force=force, opener=web, downloads=str(tmp_path / "dl"))


def test_a_security_release_is_downloaded_and_installed(tmp_path, box, release_key):
    web = Web()
    publish(web, tmp_path, release_key, 1_800_000_000, {"0.2.0": bundle(tmp_path, "0.2.0")})
    u = updater(tmp_path, box, "0.1.0")
    assert check(u, web, release_key, tmp_path) == (
        "installed 0.2.0 into slot B; restarting into it")
    assert box.log == [("install-start", "homenode-0.2.0.raucb"),
                       ("install-end", "homenode-0.2.0.raucb"), ("systemctl", "reboot")]
    assert list((tmp_path / "dl").iterdir()) == []  # the download is not kept
    h = History(str(tmp_path / "data/history.json")).data
    assert (h["last_check"], h["index_generated"]) == (1_800_000_000, 1_800_000_000)
    assert h["pending"]["version"] == "0.2.0" and h["pending"]["installed"] is True
    # the clock has not moved: the next timer run does not even fetch
    n = len(web.fetched)
    assert check(updater(tmp_path, box, "0.1.0"), web, release_key, tmp_path) == "not due yet"
    assert len(web.fetched) == n


def test_a_refused_release_is_not_retried_by_itself(tmp_path, box, release_key):
    web = Web()
    bad = bundle(tmp_path, "0.2.0", refuse="signature verification failed")
    publish(web, tmp_path, release_key, 1_800_000_000, {"0.2.0": bad})
    with pytest.raises(UpdateRefused, match="signature verification failed"):
        check(updater(tmp_path, box, "0.1.0"), web, release_key, tmp_path)
    h = History(str(tmp_path / "data/history.json"))
    sha = hashlib.sha256(Path(bad).read_bytes()).hexdigest()
    assert h.data["declined_sha256"] == [sha] and h.last["result"] == "refused"
    assert check(updater(tmp_path, box, "0.1.0"), web, release_key, tmp_path, force=True) == (
        "up to date (0.1.0; channel security)")
    assert box.log == []  # nothing was ever installed


def test_an_older_index_is_refused_as_a_replay(tmp_path, box, release_key):
    web = Web()
    publish(web, tmp_path, release_key, 1_800_000_000, {})
    assert check(updater(tmp_path, box, "0.1.0"), web, release_key, tmp_path) == (
        "up to date (0.1.0; channel security)")
    publish(web, tmp_path, release_key, 1_700_000_000, {"0.2.0": bundle(tmp_path, "0.2.0")})
    with pytest.raises(IndexProblem, match="replayed index"):
        check(updater(tmp_path, box, "0.1.0"), web, release_key, tmp_path, force=True)
    assert History(str(tmp_path / "data/history.json")).data["index_generated"] == 1_800_000_000
    assert box.log == []


def test_a_failed_install_is_recorded_and_the_slot_left_alone(tmp_path, box, release_key):
    web = Web()
    publish(web, tmp_path, release_key, 1_800_000_000, {"0.2.0": bundle(tmp_path, "0.2.0")})
    box.install_status = 1  # rauc install fails while writing
    with pytest.raises(RaucError):
        check(updater(tmp_path, box, "0.1.0"), web, release_key, tmp_path)
    h = History(str(tmp_path / "data/history.json"))
    assert h.pending is None and h.last["result"] == "failed"


def test_a_release_met_by_a_restart_under_way_is_offered_again(tmp_path, box, release_key):
    """Deferred, not declined: a box restarting into another update checks again later."""
    web = Web()
    first = updater(tmp_path, box, "0.1.0")
    (tmp_path / "usb").mkdir()
    first.apply(bundle(tmp_path / "usb", "0.1.9"), source="USB stick")  # restarting into it
    (tmp_path / "rel").mkdir()
    publish(web, tmp_path, release_key, 1_800_000_000, {"0.2.0": bundle(tmp_path / "rel", "0.2.0")})
    with pytest.raises(UpdateDeferred, match="restarting into 0.1.9"):
        check(updater(tmp_path, box, "0.1.0"), web, release_key, tmp_path)
    h = History(str(tmp_path / "data/history.json"))
    assert "declined_sha256" not in h.data and h.pending["version"] == "0.1.9"
