"""Every CLI error path as a table: a real `homenode` subprocess per row, asserting the exit code
(0 ok, 1 operational, 2 usage/config) and the one line it prints, never a traceback.

A row is (name, argv, expected exit code, fragment of the error line); argv may use the
placeholders below, filled in per run. `run` rows start a real daemon that must fail; the node's
log lines may come before its error, which must be the last line. Other rows print exactly one
line on stderr.

Data-dir rows (permission denied, read-only mount, missing path, store errors) belong to the
store work (issue 9 item 2/3): add them to STORE_ROWS below, same shape.
"""

import os
import socket
import subprocess
import sys

import pytest

from firmware.identity import Identity, write_key_file

SOMEONE = Identity(b"\x09" * 32).id_hex
PASS = "correct horse battery"

def homenode(*args, input=None, env=None, cwd=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], input=input, env=env,
                          cwd=cwd, capture_output=True, timeout=timeout)


# name, argv, exit code, fragment of the error line
CLIENT_ROWS = [
    ("timeout negative", ["status", "--timeout", "-1"], 2,
     "argument --timeout: '-1' is not a number of seconds above 0"),
    ("timeout not a number", ["status", "--timeout", "soon"], 2,
     "'soon' is not a number of seconds above 0"),
    ("timeout nan", ["status", "--timeout", "nan"], 2, "above 0"),
    ("unknown flag", ["send", "--bogus", "--to", SOMEONE, "hi"], 2,
     "unrecognized arguments: --bogus (see: homenode send --help)"),
    ("node without node id", ["status", "--node", "127.0.0.1:{port}", "--data-dir",
                              "{tmp}/empty"], 2,
     "--node 127.0.0.1:{port} needs --node-id HEX too"),
    ("node bad port", ["status", "--node", "127.0.0.1:70000", "--node-id", SOMEONE], 2,
     "port from 1 to 65535"),
    ("keygen into a missing dir", ["keygen", "--out", "{tmp}/no/such/dir/me.key"], 1,
     "directory {tmp}/no/such/dir does not exist; create it first (mkdir -p"),
    ("ttl 15d in ns 0", ["send", "--to", "{me}", "--ttl", "15d", "hi"], 2,
     "--ttl 15d is too long for the public inbox (ns 0): at most 14d there (30d in other"),
    ("ttl 337h in ns 0", ["send", "--to", "{me}", "--ttl", "337h", "hi"], 2,
     "at most 336h there"),
    ("ttl 31d in ns 5", ["send", "--to", "{me}", "--ns", "5", "--key", "{key}", "--ttl", "31d",
                         "hi"], 2, "--ttl 31d is too long for namespace 5: at most 30d there"),
    ("ttl too short", ["send", "--to", "{me}", "--ttl", "5s", "hi"], 2,
     "--ttl 5s is too short: at least 10s"),
    ("ttl not a duration", ["send", "--to", "{me}", "--ttl", "forever", "hi"], 2,
     "'forever' is not a duration like 90s"),
    ("ns above range", ["send", "--to", "{me}", "--ns", "40000", "hi"], 2,
     "--ns 40000 is out of range: namespaces are -32768..32767"),
    ("ns below range", ["send", "--to", "{me}", "--ns", "-40000", "--key", "{key}", "hi"], 2,
     "--ns -40000 is out of range"),
    # -1 is a real namespace (-32768..32767): it is private, so it needs the owner's key
    ("ns -1 without key", ["send", "--to", "{me}", "--ns", "-1", "hi"], 2,
     "--ns -1 is a private namespace: storing there needs --key"),
    ("fetch ns out of range", ["fetch", "--key", "{key}", "--ns", "32768"], 2,
     "--ns 32768 is out of range"),
    ("message too big (argument)", ["send", "--to", "{me}", "x" * 76_753], 2,
     "the message (argument) is 76,753 bytes; one message holds at most 76,752 bytes"),
    ("message too big (stdin, 2 MB)", ["send", "--to", "{me}", "<2000000"], 2,
     "the message (stdin) is more than 76,752 bytes"),
    ("update off a box", ["update", "apply", "{tmp}/x.raucb"], 2,
     "system updates work only on a homenode box"),
    ("update verb unknown", ["update", "install", "x"], 2, "invalid choice: 'install'"),
    ("message at the limit", ["send", "--to", "{me}", "<76752"], 0, None),
    ("no node in data dir", ["send", "--to", "{me}", "--data-dir", "{tmp}/empty", "hi"], 1,
     "no running node found in"),
    ("wrong passphrase", ["identity", "import", "--out", "{tmp}/restored.key", "{backup}",
                          "env:HOMENODE_PASSPHRASE=not the passphrase"], 1,
     "wrong passphrase (nothing was written)"),
    ("no passphrase, no terminal", ["identity", "export", "{tmp}/b2.json", "--key", "{key}"], 2,
     "no passphrase: set HOMENODE_PASSPHRASE, or run this in a terminal"),
    ("short passphrase", ["identity", "export", "{tmp}/b3.json", "--key", "{key}",
                          "env:HOMENODE_PASSPHRASE=short"], 2, "use at least 8"),
    ("not a backup file", ["identity", "import", "--out", "{tmp}/x.key", "{key}",
                           "env:HOMENODE_PASSPHRASE=whatever1"], 1,
     "not a homenode-identity-backup file"),
]

RUN_ROWS = [
    ("port already in use", ["run", "--data-dir", "{tmp}/r1", "--port", "{busy_port}"], 1,
     "cannot start: 127.0.0.1:{busy_port} is already in use (another homenode or another "
     "program listens there); stop it, or choose another port with --port"),
    ("host not on this machine", ["run", "--data-dir", "{tmp}/r2", "--host", "192.0.2.1",
                                  "--port", "0"], 1,
     "cannot start: 192.0.2.1 (--host) is not an address of this machine"),
    ("node key missing next to a store", ["run", "--data-dir", "{keyless}", "--port", "0"], 1,
     "node.key is missing, but the store in {keyless} belongs to node"),
    ("node key replaced", ["run", "--data-dir", "{swapped}", "--port", "0"], 1,
     "but the store in {swapped} belongs to node"),
]

# Permission denied / read-only / missing data dir and store errors: the store engineer's rows.
STORE_ROWS: list = []


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A running node, a user key, a backup, a busy port, and data dirs with identity trouble."""
    from tests.conftest import NodeProcess

    tmp = tmp_path_factory.mktemp("cli-errors")
    node = NodeProcess(tmp, {}).start()
    key = str(tmp / "me.key")
    me = Identity.generate()
    write_key_file(key, me)
    env = dict(os.environ, HOMENODE_PASSPHRASE=PASS)
    backup = str(tmp / "backup.json")
    r = homenode("identity", "export", backup, "--key", key, env=env)
    assert r.returncode == 0, r.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    # a store whose key went missing, and one whose key was replaced by another node's
    keyless, swapped = NodeProcess(tmp, {}, name="keyless"), NodeProcess(tmp, {}, name="swapped")
    for n in (keyless, swapped):
        n.start().stop()
    os.unlink(os.path.join(keyless.data_dir, "node.key"))
    os.unlink(os.path.join(swapped.data_dir, "node.key"))
    write_key_file(os.path.join(swapped.data_dir, "node.key"), Identity.generate())
    (tmp / "empty").mkdir()
    yield {"tmp": str(tmp), "node": node, "key": key, "me": me.id_hex, "backup": backup,
           "port": str(node.port), "busy_port": str(busy.getsockname()[1]),
           "keyless": keyless.data_dir, "swapped": swapped.data_dir}
    busy.close()
    node.kill()


def _run_row(world, argv, *, run_row):
    fill = {k: v for k, v in world.items() if isinstance(v, str)}
    args, stdin, env = [], None, dict(os.environ)
    env.pop("HOMENODE_PASSPHRASE", None)
    for a in argv:
        a = a.format(**fill)
        if a.startswith("<") and a[1:].isdigit():
            stdin = b"y" * int(a[1:])
        elif a.startswith("env:"):
            k, _, v = a[4:].partition("=")
            env[k] = v
        else:
            args.append(a)
    if not run_row and "--data-dir" not in args and args[0] in ("send", "fetch", "status"):
        args += ["--data-dir", world["node"].data_dir]
    r = homenode(*args, input=stdin, env=env, cwd=world["tmp"])
    return r, fill


def _check(r, code, fragment, fill, *, one_line):
    err = r.stderr.decode(errors="replace")
    assert "Traceback" not in err and b"Traceback" not in r.stdout, err
    assert r.returncode == code, (r.returncode, err)
    if fragment is None:
        return
    lines = err.strip().splitlines()
    if one_line:
        assert len(lines) == 1, lines
    assert lines and lines[-1].startswith("homenode"), lines
    assert fragment.format(**fill) in lines[-1], lines[-1]


@pytest.mark.parametrize("name, argv, code, fragment", CLIENT_ROWS, ids=[r[0] for r in CLIENT_ROWS])
def test_client_error_line(world, name, argv, code, fragment):
    r, fill = _run_row(world, argv, run_row=False)
    _check(r, code, fragment, fill, one_line=True)


@pytest.mark.parametrize("name, argv, code, fragment", RUN_ROWS + STORE_ROWS,
                         ids=[r[0] for r in RUN_ROWS + STORE_ROWS])
def test_run_error_line(world, name, argv, code, fragment):
    r, fill = _run_row(world, argv, run_row=True)
    _check(r, code, fragment, fill, one_line=False)


def test_message_at_the_limit_arrives_whole(world, tmp_path):
    """76,752 bytes of plaintext is exactly 76,800 stored: accepted, and fetched back intact."""
    node = world["node"]
    key = str(tmp_path / "u.key")
    user = Identity.generate()
    write_key_file(key, user)
    text = "z" * 76_752
    r = node.cli("send", "--to", user.id_hex, "--direct", input=text.encode())
    assert r.returncode == 0, r.stderr
    assert len(bytes.fromhex(r.stdout.decode().strip())) == 32  # the hash alone on stdout
    assert b"sent 76,752 bytes encrypted to" in r.stderr and b"message hash" in r.stderr
    r = node.cli("fetch", "--key", key, "--direct")
    assert r.stdout.decode().splitlines() == [text]
    r = node.cli("send", "--to", user.id_hex, "--json", "hi")
    import json
    out = json.loads(r.stdout)
    assert set(out) == {"hash", "expiry", "new", "replicas"} and out["new"] is True


def test_node_flag_of_the_local_node_needs_no_id(world):
    """--node naming the node this data dir's node.json describes: its id is pinned from there."""
    r = world["node"].cli("status", "--node", f"127.0.0.1:{world['port']}")
    assert r.returncode == 0, r.stderr


def test_a_damaged_node_json_is_named(tmp_path):
    (tmp_path / "node.json").write_text('{"host": "127.0.0.1", "port": "x", "node_id": "zz"}')
    r = homenode("status", "--data-dir", str(tmp_path))
    _check(r, 1, "node.json is damaged (ValueError", {}, one_line=True)


def test_a_bug_is_one_line_too(capsys, monkeypatch):
    """An unexpected exception: one 'internal error' line, the traceback only on request."""
    from firmware.cli import COMMANDS, Command, main

    def boom(args):
        raise KeyError("surprise")

    cmds = COMMANDS + [Command("boom", "raises", lambda p: None, boom)]
    monkeypatch.delenv("HOMENODE_DEBUG", raising=False)
    assert main(["boom"], cmds) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError: 'surprise'" in err
    monkeypatch.setenv("HOMENODE_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["boom"], cmds)
