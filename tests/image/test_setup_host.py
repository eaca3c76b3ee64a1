"""The box's first-boot setup (image/device/setup.py) on a temporary root, no QEMU: a bad
homenode.toml changes nothing, and EVERY problem is listed, truthfully, in homenode-problems.txt
and in `homenode status`. System commands (hostname, systemctl) are recorded, not run; the node
identity is created by the real firmware code in a subprocess, as on the box."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "image" / "device"))
import setup  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5Cq2p7Xh2yCkQ2vG9pG3nYkYv4bq2h0d3W1Uu8yZ0 me@pc"
GOOD = f"""
[device]
hostname = "attic-node"
[ssh]
authorized_keys = ["{KEY}"]
[bandwidth]
monthly_cap_gb = 200
"""
BAD = """
[device]
hostname = "Attic Node"
[bandwidth]
monthly_cap = 200
[thermal]
warm_c = 85
hot_c = 70
critical_c = 60
"""


class Recorder:
    """Runs the identity command for real; records every other command."""

    def __init__(self):
        self.commands = []

    def __call__(self, *cmd, check=True, **kw):
        if cmd[0] == sys.executable:
            return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)
        self.commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def box(tmp_path):
    root = tmp_path / "root"
    for d in ("boot/firmware", "var/lib/homenode", "etc/homenode", "etc/ssh"):
        (root / d).mkdir(parents=True)
    return setup.Box(root, runner=Recorder(), identity_cmd=[sys.executable])


def boot(box, text):
    (box.boot / "homenode.toml").write_text(text)
    assert setup.main(box) == 0
    problems = box.problems.read_text() if box.problems.exists() else None
    report = box.data / "setup-report.json"
    return problems, (json.loads(report.read_text()) if report.exists() else None)


def test_first_boot_with_a_bad_file_says_defaults_and_lists_every_problem(box):
    import os

    node_user = (4242, 4242) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(box.data, *node_user)  # the node's own user owns its data dir
    problems, report = boot(box, BAD)
    st = (box.data / "setup-report.json").stat()
    assert (st.st_uid, st.st_gid) == node_user  # so the node may read and write it
    assert "it runs with the default settings" in problems
    assert "kept" not in problems  # nothing was kept: there was nothing before
    for fragment in ("[device] hostname", "did you mean monthly_cap_gb", "warm_c < hot_c"):
        assert fragment in problems
    assert report["using"] == "defaults" and len(report["problems"]) == 3
    assert (box.etc / "hostname").read_text() == "homenode\n"
    cfg = tomllib.loads(box.node_config.read_text())
    assert cfg == {"node": {"data_dir": "/var/lib/homenode", "listen_host": "0.0.0.0"}}
    node_id = box.node_id_file.read_text().strip()
    assert len(bytes.fromhex(node_id)) == 32


def test_a_good_file_then_a_bad_one_keeps_the_good_settings(box):
    problems, report = boot(box, GOOD)
    assert problems is None and report is None
    assert (box.etc / "hostname").read_text() == "attic-node\n"
    good_cfg = box.node_config.read_text()
    assert tomllib.loads(good_cfg)["bandwidth"] == {"monthly_cap_gb": 200}
    assert (box.root_ssh / "authorized_keys").read_text() == KEY + "\n"
    assert (box.wants / "ssh.service").is_symlink()

    problems, report = boot(box, BAD)
    assert "it kept the settings of the last homenode.toml that worked" in problems
    assert report == {"problems": report["problems"], "using": "previous"}
    assert len(report["problems"]) == 3
    assert box.node_config.read_text() == good_cfg  # nothing changed
    assert (box.etc / "hostname").read_text() == "attic-node\n"
    assert (box.root_ssh / "authorized_keys").exists()

    problems, report = boot(box, GOOD)  # fixed: the report goes away
    assert problems is None and report is None


def test_a_missing_key_next_to_a_store_is_reported_not_replaced(box):
    boot(box, GOOD)
    node_id = box.node_id_file.read_text()
    (box.data / "messages.sqlite3").write_bytes(b"")  # the node has stored messages
    (box.data / "node.key").unlink()
    problems, report = boot(box, GOOD)
    assert "the node's identity:" in problems and "node.key is missing" in problems
    assert report["using"] == "homenode.toml"
    assert not (box.data / "node.key").exists()  # no new identity was made silently
    assert box.node_id_file.read_text() == node_id


def test_status_shows_what_setup_could_not_apply(node_factory):
    node = node_factory()
    Path(node.data_dir).mkdir(parents=True)
    report = {"problems": ["homenode.toml: [device] hostname = \"Attic Node\" is not allowed"],
              "using": "previous"}
    (Path(node.data_dir) / "setup-report.json").write_text(json.dumps(report))
    node.start()
    r = node.cli("status", "--json")
    info = json.loads(r.stdout)
    assert info["setup_problems"] == report["problems"] and info["setup_using"] == "previous"
    text = node.cli("status", "--full").stdout.decode()
    assert "setup problems" in text and "Attic Node" in text
