"""Config: each invalid file gets its precise message and exit code 2; defaults and overrides."""

import tomllib

import pytest

from firmware.config import ConfigError, IntRange, Key, Schema, Section
from firmware.settings import default_schema
from tests.conftest import run_cli

# (file content, the exact message after "<file>: ")
INVALID = [
    ("[node]\nlisten_port = 70000\n",
     "[node] listen_port = 70000 is not allowed: expected an integer from 0 to 65535"),
    ('[node]\nlisten_port = "7070"\n',
     '[node] listen_port = "7070" is not allowed: expected an integer from 0 to 65535'),
    ("[node]\nlisten_port = 7070.5\n",
     "[node] listen_port = 7070.5 is not allowed: expected an integer from 0 to 65535"),
    ("[node]\nlog_level = \"verbose\"\n",
     "[node] log_level = \"verbose\" is not allowed: expected one of 'debug', 'info', "
     "'warning', 'error'"),
    ("[node]\ndata_dir = \"  \"\n",
     "[node] data_dir = \"  \" is not allowed: expected a directory path"),
    ("[node]\nlog_levl = \"info\"\n",
     "unknown key [node] log_levl; did you mean log_level? (keys of [node]: data_dir, "
     "listen_host, listen_port, log_level, shutdown_grace)"),
    ("[limit]\nmax_connections = 5\n",
     "unknown section [limit]; did you mean [limits]?"),
    ("[limits]\nmax_connections = true\n",
     "[limits] max_connections = true is not allowed: expected an integer from 1 to 100000"),
    ("[limits]\nmax_connections = 0\n",
     "[limits] max_connections = 0 is not allowed: expected an integer from 1 to 100000"),
    ("[limits]\nidle_timeout = -1\n",
     "[limits] idle_timeout = -1 is not allowed: expected a number from 1 to 86400 seconds"),
    ("[limits]\nhandshake_timeout = nan\n",
     "[limits] handshake_timeout = nan is not allowed: expected a number from 0.1 to 600 seconds"),
    ("[limits]\nrate_per_sec = [1, 2]\n",
     "[limits] rate_per_sec = [1, 2] is not allowed: expected a number from 0.1 to 10000000 "
     "requests/s"),
    ("[store]\nbatch_rows = 0\n",
     "[store] batch_rows = 0 is not allowed: expected an integer from 1 to 10000"),
    ("[store]\nquota_bytes = 10\n",
     "[store] quota_bytes = 10 is not allowed: expected an integer from 1048576 to "
     "17592186044416"),
    ("[store]\nsweep_intervall = 3\n",
     "unknown key [store] sweep_intervall; did you mean sweep_interval? (keys of [store]: "
     "quota_bytes, batch_rows, batch_ms, sweep_interval)"),
    ("node = 5\n", "node = 5 must be a table: write it as a [node] section"),
    ("[node\n", "not valid TOML: "),
]


@pytest.mark.parametrize("content, message", INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_config_precise_message_and_exit_2(tmp_path, content, message):
    path = tmp_path / "homenode.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        default_schema().load(str(path))
    assert e.value.problems[0].startswith(f"{path}: {message}"), e.value.problems
    r = run_cli("config", "check", str(path))
    assert r.returncode == 2
    assert r.stderr.decode().startswith(f"{path}: {message}") and b"Traceback" not in r.stderr
    # `run` refuses the same file with the same message and exit code
    r = run_cli("run", "--config", str(path), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and message in r.stderr.decode()
    assert not (tmp_path / "d").exists()


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[node]\nlisten_port = -1\nlog_level = 3\n[limits]\nrate_burst = 0\n")
    with pytest.raises(ConfigError) as e:
        default_schema().load(str(path))
    assert len(e.value.problems) == 3


def test_missing_and_unreadable_files(tmp_path):
    r = run_cli("config", "check", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and b"no such file" in r.stderr
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[node]")
    r = run_cli("config", "check", str(tmp_path / "bin.toml"))
    assert r.returncode == 2 and b"not valid TOML" in r.stderr


def test_valid_file_ok_and_values_typed(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text("[node]\nlisten_port = 7443\n[limits]\nidle_timeout = 60\n")
    cfg = default_schema().load(str(path))
    assert cfg.node.listen_port == 7443 and cfg.limits.idle_timeout == 60.0
    assert isinstance(cfg.limits.idle_timeout, float)
    assert cfg.node.listen_host == "127.0.0.1" and cfg.limits.rate_burst == 600
    assert cfg.get("limits.rate_per_sec") == 300.0 and cfg.source == str(path)
    r = run_cli("config", "check", str(path))
    assert r.returncode == 0 and r.stdout.decode().strip() == f"{path}: ok"


def test_overrides_win_and_are_validated(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text("[node]\nlisten_port = 7443\n")
    cfg = default_schema().load(str(path), {"node.listen_port": 9000})
    assert cfg.node.listen_port == 9000
    with pytest.raises(ConfigError, match=r"command line: node.listen_port = 99999 is not"):
        default_schema().load(None, {"node.listen_port": 99999})
    r = run_cli("run", "--port", "99999", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and b"expected an integer from 0 to 65535" in r.stderr


def test_defaults_file_round_trips_to_the_defaults():
    schema = default_schema()
    parsed = tomllib.loads(schema.defaults_toml())
    assert parsed == schema.defaults()
    r = run_cli("config", "defaults")
    assert r.returncode == 0 and tomllib.loads(r.stdout.decode()) == schema.defaults()


def test_a_new_section_is_just_a_declaration():
    thermal = Section("thermal", "CPU temperature governor", [
        Key("warm_c", 70, "pause background work above this", IntRange(40, 90)),
    ])
    schema = Schema((thermal,))
    assert schema.load(None).thermal.warm_c == 70
    problems = schema.validate({"thermal": {"warm_c": 95}}, "f.toml")[1]
    assert problems == ["f.toml: [thermal] warm_c = 95 is not allowed: expected an integer "
                        "from 40 to 90"]
    with pytest.raises(ValueError, match="declared twice"):
        Schema((thermal, thermal))


def test_settings_are_read_only_once_loaded():
    cfg = default_schema().load(None)
    with pytest.raises(AttributeError, match="read-only"):
        cfg.network.advertise_host = "203.0.113.9"
    with pytest.raises(AttributeError, match="read-only"):
        cfg.node = None
    assert cfg.network.advertise_host == "" and cfg.get("network.advertise_host") == ""
