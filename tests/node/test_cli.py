"""CLI behaviour: exit codes (0 ok, 1 operational, 2 usage/config), one-line errors, defaults."""

import os
import subprocess
import sys

from firmware.cli import COMMANDS, Command, build_parser
from firmware.identity import Identity
from tests.conftest import run_cli

ZERO_ID = "00" * 32  # 64 hex digits, but not a usable Ed25519 key
SOMEONE = Identity(b"\x09" * 32).id_hex


def _no_traceback(r):
    assert b"Traceback" not in r.stderr and b"Traceback" not in r.stdout, r.stderr


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith(b"homenode ")
    r = run_cli()
    assert r.returncode == 2  # a subcommand is required


def test_usage_errors_exit_2(tmp_path):
    cases = [
        ("send", "--to", "nothex", "hi"),
        ("send", "--to", ZERO_ID, "hi"),
        ("send", "--to", SOMEONE, "--ns", "5", "hi"),
        ("send", "--to", SOMEONE, "--ttl", "forever", "hi"),
        ("status", "--node", "localhost", "--node-id", ZERO_ID),
        ("status", "--node", "127.0.0.1:1", "--node-id", "abc"),
        ("fetch",),
    ]
    for args in cases:
        r = run_cli(*args, "--data-dir", str(tmp_path), cwd=str(tmp_path))
        assert r.returncode == 2, (args, r.stderr)
        _no_traceback(r)


def test_operational_errors_exit_1(tmp_path):
    key = str(tmp_path / "me.key")
    assert run_cli("keygen", "--out", key).returncode == 0
    cases = [
        # no node running in this data dir
        (("send", "--to", SOMEONE, "hi"), b"no running node found"),
        # nothing listens there
        (("status", "--node", "127.0.0.1:1", "--node-id", ZERO_ID), b"cannot talk to the node"),
        (("fetch", "--key", str(tmp_path / "missing.key")), b"homenode keygen --out"),
        (("keygen", "--out", key), b"refusing to overwrite"),
    ]
    for args, text in cases:
        r = run_cli(*args, "--data-dir", str(tmp_path / "d"), cwd=str(tmp_path))
        assert r.returncode == 1, (args, r.stderr)
        assert text in r.stderr, r.stderr
        assert r.stderr.count(b"\n") == 1  # one line
        _no_traceback(r)
    os.chmod(key, 0o644)
    r = run_cli("id", "--key", key)
    assert r.returncode == 1 and b"chmod 600" in r.stderr


def test_wrong_node_id_refuses_to_talk(node):
    r = node.cli("status", "--node-id", ZERO_ID)
    assert r.returncode == 1 and b"refusing to talk" in r.stderr
    _no_traceback(r)


def test_refused_request_is_exit_1_with_the_nodes_reason(node_factory, tmp_path):
    node = node_factory(limits={"rate_burst": 2, "rate_per_sec": 0.1}).start()
    r1 = node.cli("status")
    r2 = node.cli("status")
    r3 = node.cli("status")
    assert r1.returncode == 0 and r2.returncode == 0
    assert r3.returncode == 1 and b"[rate_limited]" in r3.stderr and b"retry in" in r3.stderr
    _no_traceback(r3)


def test_default_data_dir_just_works(node_factory, tmp_path):
    """Run from the directory holding ./.homenode (like the README's local node): no flags."""
    node = node_factory(data_dir_name=".homenode").start()
    key = str(node.dir / "me.key")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMENODE_")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "firmware.cli", *args], cwd=str(node.dir),
                              capture_output=True, env=env, timeout=30)

    me = cli("keygen", "--out", key).stdout.decode().strip()
    assert cli("id").stdout.decode().strip() == node.node_id.hex()
    assert cli("send", "--to", me, "hello there").returncode == 0
    assert cli("fetch", "--key", key).stdout.decode().splitlines() == ["hello there"]


def test_private_namespace_send_and_fetch(node, tmp_path):
    key = str(tmp_path / "me.key")
    me = run_cli("keygen", "--out", key).stdout.decode().strip()
    r = node.cli("send", "--to", me, "--ns", "5", "--key", key, "private note")
    assert r.returncode == 0, r.stderr
    assert node.cli("fetch", "--key", key).stdout == b""
    r = node.cli("fetch", "--key", key, "--ns", "5")
    assert r.stdout.decode().splitlines() == ["private note"]


def test_subcommands_come_from_the_table():
    ran = []
    extra = Command("demo", "a plugged-in command", lambda p: p.add_argument("--device"),
                    lambda a: ran.append(a.device) or 0)
    parser = build_parser(COMMANDS + [extra])
    args = parser.parse_args(["demo", "--device", "/dev/sdz"])
    assert args._run(args) == 0 and ran == ["/dev/sdz"]
    args = parser.parse_args(["config", "check", "x.toml"])
    assert args.file == "x.toml"


def test_keygen_without_out_creates_the_node_key_once(tmp_path):
    data = str(tmp_path / "d")
    r1 = run_cli("keygen", "--data-dir", data)
    r2 = run_cli("keygen", "--data-dir", data)
    assert r1.returncode == 0 and b"created node key" in r1.stderr
    assert r2.returncode == 0 and b"exists" in r2.stderr and r1.stdout == r2.stdout
    assert run_cli("id", "--data-dir", data).stdout == r1.stdout
    assert (os.stat(os.path.join(data, "node.key")).st_mode & 0o777) == 0o600
