"""A lost or swapped node.key next to a store is refused with what to do; `run --new-identity`
accepts a new id on purpose; `identity export`/`import` restore the old one. Real node processes."""

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import tempfile

import pytest
import trio

from firmware.client import connect, seal_for
from firmware.identity import Identity, write_key_file
from firmware.identity_backup import WrongPassphrase, export_text, import_text

PASS = "correct horse battery staple"


def homenode(*args, env=None, input=None, timeout=60):
    e = dict(os.environ)
    e.pop("HOMENODE_PASSPHRASE", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], capture_output=True,
                          env=e, input=input, timeout=timeout)


def run_until_ready(data_dir, *extra, timeout=30):
    """`homenode run` with `extra` flags until READY=1, then SIGTERM: (exit code, node.json)."""
    with tempfile.TemporaryDirectory(prefix="hn-ready-") as d:
        path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(timeout)
        proc = subprocess.Popen([sys.executable, "-m", "firmware.cli", "run", "--port", "0",
                                 "--data-dir", data_dir, *extra],
                                env=dict(os.environ, NOTIFY_SOCKET=path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
            with open(os.path.join(data_dir, "node.json")) as f:
                info = json.load(f)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        finally:
            proc.kill()
            proc.wait()
            sock.close()
        return proc.returncode, info


def store_one(node, recipient: Identity, text: bytes):
    async def main():
        async with connect(node.host, node.port, node.node_id) as c:
            await c.store(recipient.node_id, seal_for(recipient.node_id, text))

    trio.run(main)


def count_messages(host, port, node_id, owner: Identity) -> int:
    async def main():
        async with connect(host, port, node_id) as c:
            return len(await c.retrieve_all(owner.signing_key))

    return trio.run(main)


@pytest.fixture
def used_node(node_factory):
    """A node that stored one message, then stopped; returns (node, owner)."""
    node = node_factory().start()
    owner = Identity.generate()
    store_one(node, owner, b"kept across key trouble")
    node.stop()
    return node, owner


def test_missing_key_next_to_a_store_is_refused_then_new_identity_accepts(used_node):
    node, owner = used_node
    old = node.node_id
    os.unlink(os.path.join(node.data_dir, "node.key"))
    r = homenode("run", "--port", "0", "--data-dir", node.data_dir)
    err = r.stderr.decode().strip().splitlines()[-1]
    assert r.returncode == 1 and "Traceback" not in r.stderr.decode()
    assert "node.key is missing, but the store in" in err and old.hex()[:16] in err
    assert "homenode identity import BACKUP" in err and "homenode run --new-identity" in err
    assert not os.path.exists(os.path.join(node.data_dir, "node.key"))  # nothing was created
    # keygen (the node key) refuses the same way instead of quietly making one
    r = homenode("keygen", "--data-dir", node.data_dir)
    assert r.returncode == 1 and b"is missing, but the store" in r.stderr

    code, info = run_until_ready(node.data_dir, "--new-identity")
    assert code == 0 and info["node_id"] != old.hex()
    node.start()  # from now on a plain start works: the store belongs to the new id
    assert node.node_id.hex() == info["node_id"]
    assert count_messages(node.host, node.port, node.node_id, owner) == 1  # nothing lost


def test_replaced_key_is_refused_and_the_backup_brings_the_old_id_back(used_node, tmp_path):
    node, owner = used_node
    old = node.node_id
    backup = str(tmp_path / "node-backup.json")
    env = {"HOMENODE_PASSPHRASE": PASS}
    r = homenode("identity", "export", backup, "--data-dir", node.data_dir, env=env)
    assert r.returncode == 0 and r.stdout.decode().strip() == old.hex(), r.stderr
    assert os.stat(backup).st_mode & 0o777 == 0o600
    key = os.path.join(node.data_dir, "node.key")
    os.unlink(key)
    write_key_file(key, Identity.generate())  # someone copied another node's key in
    r = homenode("run", "--port", "0", "--data-dir", node.data_dir)
    assert r.returncode == 1
    assert f"belongs to node {old.hex()[:16]}" in r.stderr.decode().splitlines()[-1]
    # import refuses to overwrite the key that is there; once moved away, it restores
    r = homenode("identity", "import", backup, "--data-dir", node.data_dir, env=env)
    assert r.returncode == 1 and b"holds another key" in r.stderr
    os.rename(key, key + ".wrong")
    r = homenode("identity", "import", backup, "--data-dir", node.data_dir,
                 env={"HOMENODE_PASSPHRASE": "not it at all"})
    assert r.returncode == 1 and r.stderr.decode().strip().endswith(
        "wrong passphrase (nothing was written)")
    assert not os.path.exists(key)
    r = homenode("identity", "import", backup, "--data-dir", node.data_dir, env=env)
    assert r.returncode == 0, r.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    node.start()
    assert node.node_id == old
    assert count_messages(node.host, node.port, node.node_id, owner) == 1


def test_new_node_on_a_fresh_card_from_a_backup(used_node, tmp_path):
    """Moving a node to a new card: import into an empty data dir, start, same id."""
    node, _ = used_node
    env = {"HOMENODE_PASSPHRASE": PASS}
    backup = str(tmp_path / "b.json")
    assert homenode("identity", "export", backup, "--data-dir", node.data_dir,
                    env=env).returncode == 0
    fresh = str(tmp_path / "fresh")
    r = homenode("identity", "import", backup, "--data-dir", fresh, env=env)
    assert r.returncode == 0, r.stderr
    code, info = run_until_ready(fresh)
    assert code == 0 and info["node_id"] == node.node_id.hex()
    # a backup of another node is refused where a store already belongs to someone
    other = str(tmp_path / "other.key")
    write_key_file(other, Identity.generate())
    b2 = str(tmp_path / "b2.json")
    assert homenode("identity", "export", b2, "--key", other, env=env).returncode == 0
    os.unlink(os.path.join(fresh, "node.key"))
    r = homenode("identity", "import", b2, "--data-dir", fresh, env=env)
    assert r.returncode == 1 and b"belongs to node" in r.stderr


def test_data_dir_from_before_the_record_is_adopted(node_factory):
    """A data dir made before node.id existed (key + store, no record) starts and gets one."""
    node = node_factory().start()
    node.stop()
    rec = os.path.join(node.data_dir, "node.id")
    os.unlink(rec)
    node.start()
    with open(rec) as f:
        assert f.read().splitlines()[-1] == node.node_id.hex()


def test_passphrase_from_the_terminal_prompt(tmp_path):
    """No $HOMENODE_PASSPHRASE: asked on the terminal, twice for export, once for import."""
    key = str(tmp_path / "me.key")
    ident = Identity.generate()
    write_key_file(key, ident)
    backup = str(tmp_path / "b.json")

    def on_a_terminal(args, answers):
        pid, fd = pty.fork()
        if pid == 0:
            env = dict(os.environ)
            env.pop("HOMENODE_PASSPHRASE", None)
            os.execve(sys.executable, [sys.executable, "-m", "firmware.cli", *args], env)
        out = b""
        for answer in answers:
            while b"passphrase" not in out.split(b"\n")[-1]:
                out += os.read(fd, 1024)
            os.write(fd, answer.encode() + b"\n")
            out += b"\n"
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), out.decode(errors="replace")

    code, out = on_a_terminal(["identity", "export", backup, "--key", key], [PASS, PASS + "x"])
    assert code == 2 and "the two passphrases differ; nothing was written" in out
    assert not os.path.exists(backup)
    code, out = on_a_terminal(["identity", "export", backup, "--key", key], [PASS, PASS])
    assert code == 0, out
    assert PASS not in out  # not echoed
    restored = str(tmp_path / "restored.key")
    code, out = on_a_terminal(["identity", "import", backup, "--out", restored], [PASS])
    assert code == 0 and ident.id_hex in out, out


def test_backup_format_rejects_tampering_and_unknown_versions():
    ident = Identity.generate()
    text = export_text(ident, PASS, opslimit=1, memlimit=8192 * 8)
    assert import_text(text, PASS).node_id == ident.node_id
    doc = json.loads(text)
    assert doc["format"] == "homenode-identity-backup" and doc["version"] == 1
    assert ident._seed().hex() not in text
    with pytest.raises(WrongPassphrase):
        import_text(text, PASS + "!")
    from firmware.identity_backup import BackupError

    for change, fragment in [({"version": 2}, "version 2 is not supported"),
                             ({"node_id": Identity.generate().id_hex}, "was changed"),
                             ({"kdf": {**doc["kdf"], "memlimit": 1 << 40}}, "out of range"),
                             ({"nonce": "00"}, "wrong length"),
                             ({"format": "zip"}, "not a homenode-identity-backup")]:
        with pytest.raises(BackupError, match=fragment):
            import_text(json.dumps({**doc, **change}), PASS)
