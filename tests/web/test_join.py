"""Joining without a terminal: the signed seed list (format, signature, newest wins, expiry,
the signing tool) and LAN discovery (avahi-browse output parsed; a neighbour's id read from a
real node's TLS certificate; off with a reason where avahi is missing)."""

import json
import types

import trio

from firmware.identity import Identity, write_key_file
from firmware.join import JoinState
from firmware.join.discovery import LanDiscovery, parse_avahi_browse, probe_node_id
from firmware.join.seeds import (
    SeedListError,
    best_seed_list,
    main,
    sign_seed_list,
    verify_seed_list,
)
from tests.conftest import NodeProcess

NOW = 1_796_000_000_000
DAY = 86_400_000
SEED = "203.0.113.7:7070@" + "ab" * 32


def write(path, doc):
    path.write_text(json.dumps(doc))
    return str(path)


def test_signed_list_verifies_and_any_change_breaks_it():
    release = Identity.generate()
    doc = sign_seed_list(release.signing_key, [SEED], NOW, NOW + 365 * DAY)
    sl = verify_seed_list(json.dumps(doc).encode(), release.node_id, NOW + DAY)
    assert sl.seeds == (SEED,) and sl.issued_ms == NOW
    for field, value in (("seeds", ["198.51.100.1:7070@" + "cd" * 32]), ("expires_ms", NOW * 2),
                         ("issued_ms", NOW + 1)):
        forged = dict(doc, **{field: value})
        try:
            verify_seed_list(json.dumps(forged).encode(), release.node_id, NOW)
            raise AssertionError(f"a changed {field} verified")
        except SeedListError as e:
            assert "signature" in str(e)
    other = Identity.generate()
    try:
        verify_seed_list(json.dumps(doc).encode(), other.node_id, NOW)
        raise AssertionError("another key verified")
    except SeedListError as e:
        assert "release key" in str(e)


def test_newest_valid_list_wins_expired_and_broken_ones_are_named(tmp_path):
    release = Identity.generate()
    key = tmp_path / "release-key.pub"
    key.write_text(release.id_hex + "\n")
    old = write(tmp_path / "image.json",
                sign_seed_list(release.signing_key, [SEED], NOW - 10 * DAY, NOW + 700 * DAY))
    new_seed = "198.51.100.9:7070@" + "ef" * 32
    new = write(tmp_path / "update.json",
                sign_seed_list(release.signing_key, [new_seed], NOW - DAY, NOW + 700 * DAY))
    sl, note = best_seed_list([new, old, str(tmp_path / "missing.json")], str(key), NOW)
    assert sl.seeds == (new_seed,) and "1 seeds from" in note and "update.json" in note
    expired = write(tmp_path / "expired.json",
                    sign_seed_list(release.signing_key, [SEED], NOW - 90 * DAY, NOW - DAY))
    sl, note = best_seed_list([expired], str(key), NOW)
    assert sl is None and "expired" in note and "update brings a fresh list" in note
    # a box whose clock is plainly unset (before the list was issued) still uses it
    sl, _ = best_seed_list([expired], str(key), NOW - 200 * DAY)
    assert sl is not None
    (tmp_path / "junk.json").write_text("{not json")
    sl, note = best_seed_list([str(tmp_path / "junk.json")], str(key), NOW)
    assert sl is None and "not JSON" in note
    sl, note = best_seed_list([old], str(tmp_path / "nokey.pub"), NOW)
    assert sl is None and "no release key" in note
    (tmp_path / "short.pub").write_text(release.id_hex[:40] + "\n")
    sl, note = best_seed_list([old], str(tmp_path / "short.pub"), NOW)
    assert sl is None and "short.pub: expected 64 hex digits" in note
    assert best_seed_list([""], str(key), NOW) == (None, "none configured")


def test_sign_and_check_tool_round_trip(tmp_path, capsys):
    release = Identity.generate()
    write_key_file(str(tmp_path / "release.key"), release)
    (tmp_path / "release.pub").write_text(release.id_hex)
    out = tmp_path / "seeds.json"
    assert main(["sign", "--key", str(tmp_path / "release.key"), "--days", "30", "--out",
                 str(out), SEED]) == 0
    assert main(["check", "--pub", str(tmp_path / "release.pub"), str(out)]) == 0
    assert "ok, 1 seeds" in capsys.readouterr().out
    assert main(["sign", "--key", str(tmp_path / "release.key"), "--out", str(out),
                 "not-a-seed"]) == 1


def test_join_state_says_where_the_bootstrap_comes_from():
    sl = types.SimpleNamespace(seeds=(SEED,))
    disc = types.SimpleNamespace(neighbours={}, info=lambda: {"lan_discovery": "on"})
    assert JoinState(bootstrap=["x:1@" + "00" * 32], network_enabled=True, seed_list=sl,
                     seed_note="", discovery=disc).source() == "config"
    st = JoinState(bootstrap=[], network_enabled=True, seed_list=sl, seed_note="n",
                   discovery=disc)
    assert st.source() == "seed list" and st.bootstrap_entries() == [SEED]
    st = JoinState(bootstrap=[], network_enabled=True, seed_list=None, seed_note="n",
                   discovery=disc)
    assert st.source() == "none" and st.bootstrap_entries() == []
    disc.neighbours[("192.168.1.5", 7070)] = b"\x01" * 32
    assert st.source() == "lan"
    assert JoinState(bootstrap=[], network_enabled=False, seed_list=None, seed_note="",
                     discovery=None).info()["join"]["bootstrap"] == "off"


AVAHI = r"""+;eth0;IPv4;homenode\032attic;_homenode._tcp;local
=;eth0;IPv4;homenode\032attic;_homenode._tcp;local;attic.local;192.168.1.20;7070;"v=1"
=;eth0;IPv6;homenode\032attic;_homenode._tcp;local;attic.local;fe80::1234:5678;7070;"v=1"
=;eth0;IPv4;homenode\032attic;_homenode._tcp;local;attic.local;192.168.1.20;7070;"v=1"
=;eth0;IPv4;printer;_ipp._tcp;local;p.local;192.168.1.30;631;
=;eth0;IPv4;broken;_homenode._tcp;local;b.local;192.168.1.31;notaport;
"""


def test_parse_avahi_browse():
    found = parse_avahi_browse(AVAHI)
    assert [(f.name, f.address, f.port) for f in found] == [
        ("homenode attic", "192.168.1.20", 7070), ("homenode attic", "fe80::1234:5678%eth0", 7070)]
    assert found[0].txt == ("v=1",) and found[0].host == "attic.local"


async def test_discovery_reads_a_real_neighbours_id_and_calls_on_found(tmp_path):
    neighbour = NodeProcess(tmp_path, {"network": {"enabled": False}}).start()
    try:
        assert await probe_node_id("127.0.0.1", neighbour.port) == neighbour.node_id
        line = (f"=;lo;IPv4;homenode\\032n;_homenode._tcp;local;n.local;127.0.0.1;"
                f"{neighbour.port};\"v=1\"\n")
        calls = []

        async def browse():
            return line

        disc = LanDiscovery(interval=60, on_found=lambda *a: calls.append(a),
                            own_id=b"\x00" * 32, browse=browse)
        await disc.round()
        await disc.round()  # the same neighbour again: reported once
        assert calls == [("127.0.0.1", neighbour.port, neighbour.node_id)]
        assert disc.info() == {"lan_discovery": "on", "lan_neighbours": 1}
        own = LanDiscovery(interval=60, on_found=lambda *a: calls.append(a),
                           own_id=neighbour.node_id, browse=browse)
        await own.round()  # itself: never a candidate
        assert len(calls) == 1
    finally:
        neighbour.stop()


async def test_discovery_off_says_why():
    async def no_daemon():
        raise OSError("Failed to create client object: Daemon not running")

    disc = LanDiscovery(interval=60, on_found=None, own_id=b"", browse=no_daemon)
    await disc.round()
    assert disc.info()["lan_discovery"] == "off: Failed to create client object: Daemon not running"
    missing = LanDiscovery(interval=60, on_found=None, own_id=b"", have_avahi=False)
    with trio.fail_after(1):
        await missing.run()  # returns at once: nothing to browse with
    assert missing.info()["lan_discovery"] == "off: avahi-browse is not installed"


def _cfg(tmp_path, **sections):
    from firmware.settings import default_schema
    from tests.conftest import write_toml

    return default_schema().load(write_toml(tmp_path / "homenode.toml", sections))


def test_join_parts_hand_the_seed_list_to_membership_only_without_a_bootstrap(tmp_path):
    from firmware.join import JoinParts
    from firmware.logs import Log

    release = Identity.generate()
    (tmp_path / "release.pub").write_text(release.id_hex)
    seeds = write(tmp_path / "seeds.json", sign_seed_list(release.signing_key, [SEED], NOW,
                                                          NOW + 365 * DAY))
    join = {"seed_file": seeds, "release_key_file": str(tmp_path / "release.pub"),
            "lan_discovery": False}
    log = Log("debug", stream=__import__("io").StringIO())
    got = []
    parts = JoinParts(_cfg(tmp_path, join=join), str(tmp_path), b"\x01" * 32,
                      add_candidate=lambda *a: got.append(a), clock_ms=lambda: NOW, log=log)
    assert got == [("203.0.113.7", 7070, bytes.fromhex("ab" * 32))]
    assert parts.info()["join"]["bootstrap"] == "seed list" and parts.services() == []
    # a newer list dropped into the data dir by an update wins
    newer = "198.51.100.2:7070@" + "cd" * 32
    (tmp_path / "seeds.json").rename(tmp_path / "image-seeds.json")
    write(tmp_path / "seeds.json", sign_seed_list(release.signing_key, [newer], NOW + DAY,
                                                  NOW + 365 * DAY))
    got.clear()
    JoinParts(_cfg(tmp_path, join=dict(join, seed_file=str(tmp_path / "image-seeds.json"))),
              str(tmp_path), b"\x01" * 32, add_candidate=lambda *a: got.append(a),
              clock_ms=lambda: NOW + 2 * DAY, log=log)
    assert [g[0] for g in got] == ["198.51.100.2"]
    # the operator's own bootstrap: the seed list is not used
    got.clear()
    own = JoinParts(_cfg(tmp_path, join=join, network={"bootstrap": [SEED]}), str(tmp_path),
                    b"\x01" * 32, add_candidate=lambda *a: got.append(a), clock_ms=lambda: NOW,
                    log=log)
    assert got == [] and own.info()["join"]["bootstrap"] == "config"
    off = JoinParts(_cfg(tmp_path, join=join, network={"enabled": False}), str(tmp_path),
                    b"\x01" * 32, add_candidate=None, clock_ms=lambda: NOW, log=log)
    assert off.info()["join"]["bootstrap"] == "off" and off.services() == []
