"""Every benchmark command the README gives still runs as written, up to the point where the
benchmark would start working: the script is there, imports, and takes the options the README
shows it with (argparse checks their values and stops at the trailing `--help`, before any work;
an option the script does not define would be silently kept aside, so each is also looked up in
the help text)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"`\.venv/bin/python (bench/[a-z_]+\.py)([^`]*)`")


def readme_bench_commands():
    text = (REPO / "README.md").read_text()
    return sorted({(m.group(1), m.group(2).strip()) for m in COMMAND.finditer(text)})


def test_the_readme_shows_benchmark_commands():
    assert len(readme_bench_commands()) >= 15  # the performance table's Command column


@pytest.mark.parametrize(("script", "args"), readme_bench_commands(),
                         ids=lambda x: x.split("/")[-1] if "/" in x else x or "-")
def test_readme_bench_command_parses(script, args):
    argv = args.split()
    out = subprocess.run([sys.executable, script, *argv, "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"{script} {args}: {out.stderr[-2000:]}"
    assert "usage:" in out.stdout
    for option in (a for a in argv if a.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(option)}\b", out.stdout), (
            f"{script} does not define {option} (README shows it)")
