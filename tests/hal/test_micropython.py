"""The hal core tests under real MicroPython 1.27 (WebAssembly port in Node.js).

Needs `node` and `npm install` in tools/micropython (scripts/setup.sh does both). Locally a
missing runtime skips with the reason; in CI (CI set) it fails, so the proof cannot silently
disappear.
"""

import pathlib
import shutil
import subprocess

import pytest

from tests.tools import missing_tool

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNNER_DIR = ROOT / "tools" / "micropython"
PACKAGE = RUNNER_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"

pytestmark = pytest.mark.micropython


def node_or_skip():
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node (Node.js) not found on PATH"
    elif not (PACKAGE / "package.json").exists():
        problem = "MicroPython npm package missing: run `npm install` in tools/micropython"
    if problem:
        missing_tool("the MicroPython proof needs it: " + problem)
    return node


def run(node, root, copies, main):
    cmd = [node, str(RUNNER_DIR / "run.mjs"), "--root", str(root), "--main", main]
    for c in copies:
        cmd += ["--copy", c]
    return subprocess.run(cmd, cwd=RUNNER_DIR, capture_output=True, text=True, timeout=300)


def test_pinned_runtime_version():
    node_or_skip()
    import json
    version = json.loads((PACKAGE / "package.json").read_text())["version"]
    assert version == "1.27.0"


def test_core_tests_pass_under_micropython():
    node = node_or_skip()
    r = run(node, ROOT, ["hal/__init__.py", "hal/core", "tests/hal/core"],
            "tests.hal.core.mp_main")
    out = r.stdout + r.stderr
    assert r.returncode == 0, "MicroPython run failed:\n" + out
    assert "micropython: " in out and " 0 failed" in out, out
    print(out)


@pytest.mark.parametrize("body, code", [
    ("def main():\n    return 0\n", 0),
    ("def main():\n    assert 1 == 2, 'broken'\n", 1),
    ("def main():\n    raise SystemExit(3)\n", 1),
    ("def main():\n    raise SystemExit(0)\n", 0),
    ("def main():\n    return 2\n", 1),
    ("import dataclasses\ndef main():\n    return 0\n", 1),
])
def test_runner_exit_code_follows_python_outcome(tmp_path, body, code):
    node = node_or_skip()
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "m.py").write_text(body)
    r = run(node, tmp_path, ["probe"], "probe.m")
    assert r.returncode == code, r.stdout + r.stderr
