"""The README's examples run as written: every `homenode ...` command line in it (except the
ones that start a daemon or write an SD card) against a real node in ./.homenode, the
"From code" Python snippet, and the boot-partition example through `config check`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
BIN = str(Path(sys.executable).parent)
VERBS = {c.name.split()[0] for c in COMMANDS}
NOT_HERE = {"run": "starts a daemon (the fixture runs one)",
            "flash": "writes an SD card or image (tests/image/test_flash.py)",
            "bridge": "needs a bridge node and its line (tests/bridge)"}
PLACEHOLDER = re.compile(r"<[a-z ]+>|\.\.\.")  # `<id>`, '...': to be filled in by the reader


def code_blocks(text):
    """(language, body) of every fenced block, and ("sh", line) of every indented one."""
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        yield m.group(1), m.group(2)
    for m in re.finditer(r"(?:^\n)((?:^    \S.*\n)+)", text, re.M):
        yield "sh", "".join(line[4:] for line in m.group(1).splitlines(True))


def homenode_lines():
    lines = []
    for lang, body in code_blocks(README):
        if lang != "sh":
            continue
        for line in body.splitlines():
            cmd = re.sub(r"\s+#.*$", "", line).strip()
            cmd = re.sub(r"^(sudo )?\.venv/bin/", "", cmd)
            words = cmd.split()
            if words[:1] == ["homenode"] and len(words) > 1 and words[1] in VERBS:
                lines.append(cmd)  # (not a line of output such as "homenode 19e2...: ...")
    return lines


def section(name):
    return README.split(f"<!-- section:{name} -->")[1].split(f"<!-- /section:{name} -->")[0]


def test_every_runnable_command_line_runs(node_factory):
    node = node_factory(data_dir_name=".homenode").start()
    cwd = node.dir
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMENODE_")}
    env.update(PATH=BIN + os.pathsep + env["PATH"], HOMENODE_PASSPHRASE="a long passphrase")
    (cwd / "homenode.toml").write_text(boot_example())  # what `config check` is shown on
    ran, skipped = [], []
    for cmd in homenode_lines():
        verb = cmd.split()[1] if len(cmd.split()) > 1 else ""
        if verb in NOT_HERE or PLACEHOLDER.search(cmd):
            skipped.append(cmd)
            continue
        r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, (cmd, r.stderr)
        assert "Traceback" not in r.stderr, (cmd, r.stderr)
        ran.append(cmd)
    verbs = {c.split()[1] for c in ran}
    assert {"keygen", "send", "fetch", "status", "id", "config", "identity"} <= verbs, ran
    assert skipped, "the README's flash examples were expected among the lines"
    # and what they did is what the README says: the message came back
    r = subprocess.run(["bash", "-c", "homenode fetch --key me.key"], cwd=cwd, env=env,
                       capture_output=True, text=True)
    assert "hello" in r.stdout.splitlines()


def python_snippet():
    blocks = [body for lang, body in code_blocks(section("usage")) if lang == "python"]
    assert len(blocks) == 1
    return blocks[0]


def test_from_code_snippet_runs_as_written(node_factory):
    node = node_factory(data_dir_name=".homenode").start()
    r = subprocess.run([sys.executable, "-m", "firmware.cli", "keygen", "--out", "me.key"],
                       cwd=node.dir, capture_output=True)
    assert r.returncode == 0
    (node.dir / "snippet.py").write_text(python_snippet())
    r = subprocess.run([sys.executable, "snippet.py"], cwd=node.dir, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[b'hi']"


def boot_example():
    image = section("image")
    part = image.split("### First-boot configuration")[1]
    blocks = [body for lang, body in code_blocks(part) if lang == "toml"]
    return blocks[0]


def test_boot_partition_example_passes_config_check(tmp_path):
    path = tmp_path / "homenode.toml"
    path.write_text(boot_example())
    r = subprocess.run([sys.executable, "-m", "firmware.cli", "config", "check", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ok (the box's boot-partition file" in r.stdout
    sys.path.insert(0, str(REPO / "image" / "device"))
    import bootconfig

    plan = bootconfig.plan_from_text(boot_example())
    assert plan.problems == [] and plan.hostname == "attic-node" and plan.ssh_enabled


@pytest.mark.parametrize("text, fragment", [
    ("[thermal]\nwarm_c = 85\nhot_c = 70\ncritical_c = 60\n", "warm_c < hot_c < critical_c"),
    ("[hal]\nshutdown_hold_s = 12\nreset_hold_s = 10\n", "shutdown_hold_s < reset_hold_s"),
])
def test_what_config_check_refuses_run_refuses_with_the_same_line(tmp_path, text, fragment):
    path = tmp_path / "c.toml"
    path.write_text(text)
    cli = [sys.executable, "-m", "firmware.cli"]
    check = subprocess.run([*cli, "config", "check", str(path)], capture_output=True, text=True)
    run = subprocess.run([*cli, "run", "--config", str(path), "--data-dir", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and run.returncode == 2
    assert fragment in check.stderr and check.stderr.strip() in run.stderr


def test_what_config_check_accepts_run_accepts(node_factory):
    """The boot sections are known to `run` too (and ignored by the node)."""
    node = node_factory(device={"hostname": "attic-node"}, wifi={"country": "DE"},
                        thermal={"warm_c": 60.0, "hot_c": 70.0, "critical_c": 75.0})
    r = subprocess.run([sys.executable, "-m", "firmware.cli", "config", "check",
                        node.config_path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    node.start()
    assert node.cli("status").returncode == 0
