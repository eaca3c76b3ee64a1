"""The real daemon as a subprocess: CLI round trip, restart, expiry, clean stop, sd_notify."""

import json
import os
import sqlite3
import time

import trio

from firmware.client import connect, open_sealed, seal_for
from firmware.identity import Identity, load_key_file, write_key_file
from tests.conftest import run_cli


def _user(tmp_path, name="me"):
    path = str(tmp_path / f"{name}.key")
    r = run_cli("keygen", "--out", path)
    assert r.returncode == 0, r.stderr
    return path, r.stdout.decode().strip()


def _db_rows(node):
    db = sqlite3.connect(f"file:{node.data_dir}/messages.sqlite3?mode=ro", uri=True)
    try:
        return db.execute("SELECT hash, recipient, ns, ts, expiry, data FROM messages").fetchall()
    finally:
        db.close()


def test_cli_round_trip_node_sees_only_ciphertext(node, tmp_path):
    key, me = _user(tmp_path)
    assert len(me) == 64 and load_key_file(key).id_hex == me
    secret = "the eagle lands at dawn, id 7f3a"
    r = node.cli("send", "--to", me, secret)
    assert r.returncode == 0, r.stderr
    h = r.stdout.decode().strip()
    assert len(bytes.fromhex(h)) == 32

    r = node.cli("send", "--to", me, input=b"second message via stdin")
    assert r.returncode == 0, r.stderr

    r = node.cli("fetch", "--key", key)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [secret, "second message via stdin"]

    r = node.cli("fetch", "--key", key, "--json")
    recs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert recs[0]["hash"] == h and recs[0]["text"] == secret

    # The node's database holds the messages, but only as ciphertext.
    node.stop()
    rows = _db_rows(node)
    assert len(rows) == 2
    for _h, recipient, ns, _ts, _exp, data in rows:
        assert recipient == bytes.fromhex(me) and ns == 0
        assert secret.encode() not in data and b"second message" not in data
    for name in os.listdir(node.data_dir):
        with open(os.path.join(node.data_dir, name), "rb") as f:
            assert secret.encode() not in f.read(), name


def test_fetch_with_another_key_gets_nothing_and_delete_works(node, tmp_path):
    key_a, a = _user(tmp_path, "a")
    key_b, _b = _user(tmp_path, "b")
    assert node.cli("send", "--to", a, "for a").returncode == 0
    r = node.cli("fetch", "--key", key_b)
    assert r.returncode == 0 and r.stdout == b""
    r = node.cli("fetch", "--key", key_a, "--delete")
    assert r.stdout.decode().splitlines() == ["for a"]
    r = node.cli("fetch", "--key", key_a)
    assert r.returncode == 0 and r.stdout == b""


def test_status_human_and_json(node):
    r = node.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["node_id"] == node.node_id.hex()
    assert info["state"] == "serving" and info["messages"] == 0
    assert abs(info["time"] - time.time() * 1000) < 60_000
    r = node.cli("status", "--full")  # every counter, as `status` printed before issue 10
    assert r.returncode == 0
    out = r.stdout.decode()
    assert node.node_id.hex() in out and "serving" in out
    r = node.cli("status")  # the short form: health first
    assert r.returncode == 0
    first = r.stdout.decode().splitlines()[0]
    assert first.startswith(f"homenode {node.node_id.hex()[:16]}: {info['health']} - ")


def test_restart_keeps_messages(node, tmp_path):
    key, me = _user(tmp_path)
    sent = [f"message {i}" for i in range(5)]
    for text in sent:
        assert node.cli("send", "--to", me, text).returncode == 0
    old_id = node.node_id
    assert node.stop() == 0
    node.start()
    assert node.node_id == old_id  # identity persisted too
    r = node.cli("fetch", "--key", key)
    assert r.stdout.decode().splitlines() == sent


def test_expired_messages_vanish_across_processes(node_factory, tmp_path):
    node = node_factory(store={"sweep_interval": 0.2}).start()
    ident = Identity.generate()
    now = int(time.time() * 1000)

    async def main():
        async with connect(node.host, node.port, node.node_id) as c:
            # ttl is at least 10 s; back-date ts so the message expires ~1.5 s from now.
            await c.store(ident.node_id, b"short", ts=now - 8_500, ttl_ms=10_000)
            await c.store(ident.node_id, b"long", ts=now, ttl_ms=3_600_000)
            msgs = await c.retrieve_all(ident.signing_key)
            assert [m.data for m in msgs] == [b"short", b"long"]
            await trio.sleep(2.5)
            msgs = await c.retrieve_all(ident.signing_key)
            assert [m.data for m in msgs] == [b"long"]

    trio.run(main)
    assert node.stop() == 0
    assert [r[5] for r in _db_rows(node)] == [b"long"]  # the sweeper deleted the row


def test_sigterm_finishes_in_flight_and_notifies_systemd(node_factory):
    node = node_factory(node={"shutdown_grace": 10.0}).start(extra_env={"WATCHDOG_USEC": "200000"})
    ident = Identity.generate()
    acked = []

    async def main():
        async with connect(node.host, node.port, node.node_id) as c:
            async def one(i):
                r = await c.store(ident.node_id, seal_for(ident.node_id, b"m%d" % i))
                acked.append(r.hash)

            async with trio.open_nursery() as n:
                for i in range(200):
                    n.start_soon(one, i)
                await trio.sleep(0.05)
                node.proc.send_signal(15)

    try:
        trio.run(main)
    except* ConnectionError:
        pass  # requests sent after the node stopped reading are refused with a closed link
    assert node.proc.wait(20) == 0
    node.kill()
    notes = node.notifications
    assert "READY=1" in notes and "STOPPING=1" in notes
    assert notes.count("WATCHDOG=1") >= 1
    assert any(n.startswith("STATUS=serving on 127.0.0.1:") for n in notes)
    node.start()

    async def check():
        async with connect(node.host, node.port, node.node_id) as c:
            msgs = await c.retrieve_all(ident.signing_key)
            got = {m.hash: open_sealed(ident.signing_key, m.data) for m in msgs}
            assert set(acked) <= set(got)

    trio.run(check)


def test_corrupt_key_refuses_to_start_with_fix(node_factory):
    node = node_factory()
    os.makedirs(node.data_dir, mode=0o700)
    write_key_file(os.path.join(node.data_dir, "node.key"), Identity.generate())
    os.chmod(os.path.join(node.data_dir, "node.key"), 0o644)
    r = run_cli("run", "--config", node.config_path, "--data-dir", node.data_dir, timeout=20)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "mode 0644" in err and "chmod 600" in err and "Traceback" not in err


def test_second_node_on_the_same_data_dir_is_refused(node):
    r = run_cli("run", "--config", node.config_path, "--data-dir", node.data_dir, timeout=30)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "already running" in err and f"pid {node.proc.pid}" in err and "Traceback" not in err
    assert node.alive and node.cli("status").returncode == 0
    assert node.stop() == 0
    node.start()  # the lock went with the first process
