"""A node asked to be a bridge refuses to start, in one line with the fix, when it cannot be one."""

import socket

from tests.conftest import run_cli, write_toml

BOOT = "127.0.0.1:9@" + "ab" * 32


def _run(tmp_path, sections):
    cfg = write_toml(tmp_path / "homenode.toml", {"node": {"listen_port": 0}, **sections})
    return run_cli("run", "--config", cfg, "--data-dir", str(tmp_path / "data"), timeout=60)


def test_bridge_without_relays_is_a_config_error(tmp_path):
    r = _run(tmp_path, {"bridge": {"enabled": True, "port": 0}})
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert "needs [network] bootstrap" in err


def test_bridge_without_network_is_a_config_error(tmp_path):
    r = _run(tmp_path, {"bridge": {"enabled": True, "port": 0},
                        "network": {"enabled": False, "bootstrap": [BOOT]}})
    assert r.returncode == 2 and "needs [network] enabled = true" in r.stderr.decode()


def test_bridge_port_taken_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _run(tmp_path, {"bridge": {"enabled": True, "host": "127.0.0.1", "port": port},
                            "network": {"bootstrap": [BOOT]}})
    err = r.stderr.decode().strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1, err
    assert f"bridge port 127.0.0.1:{port}" in err and "already" in err.lower()


def test_bridge_line_before_the_bridge_ever_ran(tmp_path):
    (tmp_path / "data").mkdir()
    r = run_cli("bridge", "line", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1
    assert "no bridge identity" in r.stderr.decode() and "enabled = true" in r.stderr.decode()
    assert not (tmp_path / "data" / "bridge.key").exists()  # the owner's tool creates nothing
