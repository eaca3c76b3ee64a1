"""A test whose outside tool is missing fails under the README's test command and in CI (not a
silent skip), and skips with the reason in a bare local pytest run (tests/tools.py)."""

import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = '''
from tests.tools import require_tools

def test_needs_a_tool():
    require_tools("no-such-tool-for-homenode", package="no-such-package")
'''


def run_probe(tmp_path, **env):
    path = tmp_path / "test_probe.py"
    path.write_text(PROBE)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "HOMENODE_REQUIRE_TOOLS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(path), "--rootdir", str(tmp_path)],
                          cwd=REPO, env={**clean, "PYTHONPATH": REPO, **env},
                          capture_output=True, text=True, timeout=120)


def test_missing_tool_fails_under_the_test_command_and_in_ci(tmp_path):
    for env in ({"HOMENODE_REQUIRE_TOOLS": "1"}, {"CI": "true"}):
        r = run_probe(tmp_path, **env)
        assert r.returncode == 1, r.stdout
        assert "required tool missing: no-such-tool-for-homenode not found on PATH (apt-get " \
               "install no-such-package)" in r.stdout


def test_missing_tool_skips_with_the_reason_locally(tmp_path):
    r = run_probe(tmp_path)
    assert r.returncode == 0 and "1 skipped" in r.stdout
    assert "no-such-tool-for-homenode not found on PATH" in r.stdout


def test_the_readme_test_command_sets_strict_mode_and_lints():
    with open(os.path.join(REPO, "scripts", "test.sh")) as f:
        script = f.read()
    assert "export HOMENODE_REQUIRE_TOOLS=1" in script
    assert ".venv/bin/ruff check ." in script
