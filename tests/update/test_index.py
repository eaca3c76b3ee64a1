"""The signed release index (firmware/update/index.py) with real keys and signatures: made the
way a maintainer makes them (image/keys.py: openssl req / openssl dgst), verified by the box."""

import json

import pytest

from firmware.update import index
from image import keys
from tests.tools import require_tools


@pytest.fixture(autouse=True)
def _tools():
    require_tools("openssl", package="openssl")

COMPAT = "homenode-rpi-arm64"
SHA = "ab" * 32


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    keys.make_key(d / "release.key.pem", d / "release.cert.pem", "/CN=homenode release test")
    keys.make_key(d / "other.key.pem", d / "other.cert.pem", "/CN=someone else")
    return d


def doc(generated=1_800_000_000, releases=None):
    return {"format": 1, "compatible": COMPAT, "generated": generated,
            "releases": releases if releases is not None else [
                {"version": "0.1.5", "security": False, "url": "homenode-0.1.5-arm64.raucb",
                 "sha256": SHA, "size": 1000},
                {"version": "0.2.0", "security": True, "url": "v0.2.0/homenode-0.2.0.raucb",
                 "sha256": "cd" * 32, "size": 2000, "notes": "fixes a remote crash"},
            ]}


def signed(tmp_path, d, key):
    path = tmp_path / "index.json"
    path.write_bytes(json.dumps(d).encode())
    sig = keys.sign_file(path, key)
    return path.read_bytes(), sig.read_bytes()


def test_index_signed_by_the_release_key_loads(tmp_path, release):
    data, sig = signed(tmp_path, doc(), release / "release.key.pem")
    idx = index.load(data, sig, (release / "release.cert.pem").read_bytes(), COMPAT)
    assert [r.version for r in idx.releases] == ["0.1.5", "0.2.0"]
    assert idx.releases[1].security and idx.generated == 1_800_000_000


def test_keyring_with_several_certificates(tmp_path, release):
    data, sig = signed(tmp_path, doc(), release / "release.key.pem")
    ring = (release / "other.cert.pem").read_bytes() + (release / "release.cert.pem").read_bytes()
    assert index.load(data, sig, ring, COMPAT).compatible == COMPAT


def test_unknown_key_is_refused(tmp_path, release):
    data, sig = signed(tmp_path, doc(), release / "other.key.pem")
    with pytest.raises(index.IndexProblem, match="not signed by a key this box trusts"):
        index.load(data, sig, (release / "release.cert.pem").read_bytes(), COMPAT)


def test_changed_after_signing_is_refused(tmp_path, release):
    data, sig = signed(tmp_path, doc(), release / "release.key.pem")
    tampered = data.replace(b"0.2.0", b"9.2.0")
    with pytest.raises(index.IndexProblem, match="changed after signing"):
        index.load(tampered, sig, (release / "release.cert.pem").read_bytes(), COMPAT)


def test_replayed_older_index_is_refused(tmp_path, release):
    data, sig = signed(tmp_path, doc(generated=100), release / "release.key.pem")
    with pytest.raises(index.IndexProblem, match="replayed"):
        index.load(data, sig, (release / "release.cert.pem").read_bytes(), COMPAT,
                   last_generated=200)


@pytest.mark.parametrize("change, fragment", [
    ({"format": 2}, "format"),
    ({"compatible": "other-board"}, "this box is"),
    ({"generated": "yesterday"}, "generated"),
    ({"releases": [{"version": "1"}]}, "incomplete"),
    ({"releases": [{"version": "1", "url": "x", "sha256": "zz", "size": 1}]}, "bad sha256"),
])
def test_malformed_index_is_explained(change, fragment):
    with pytest.raises(index.IndexProblem, match=fragment):
        index.parse(json.dumps({**doc(), **change}).encode(), COMPAT)


def test_choose_by_channel():
    idx = index.parse(json.dumps(doc()).encode(), COMPAT)
    # a security release is newer than 0.1.0: install the newest (it carries the fix)
    assert index.choose(idx, "0.1.0", "security").version == "0.2.0"
    assert index.choose(idx, "0.1.0", "all").version == "0.2.0"
    assert index.choose(idx, "0.1.0", "off") is None
    assert index.choose(idx, "0.2.0", "all") is None  # up to date
    only_feature = index.parse(json.dumps(doc(releases=doc()["releases"][:1])).encode(), COMPAT)
    assert index.choose(only_feature, "0.1.0", "security") is None
    assert index.choose(only_feature, "0.1.0", "all").version == "0.1.5"
    # a release that failed before is not taken again by itself
    assert index.choose(idx, "0.1.0", "all", declined={"cd" * 32}).version == "0.1.5"


def test_versions_compare_numerically():
    assert index.version_key("0.10.0") > index.version_key("0.9.12")
    assert index.version_key("1.2.3+test2") == index.version_key("1.2.3")


def test_bundle_url_is_relative_to_the_index():
    r = index.parse(json.dumps(doc()).encode(), COMPAT).releases[1]
    assert index.bundle_url("https://example.org/stable/index.json", r) == \
        "https://example.org/stable/v0.2.0/homenode-0.2.0.raucb"
