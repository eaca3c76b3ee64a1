"""scripts/setup.sh with apt, dpkg and the venv's Python replaced by recorders on PATH (a test
must not install Debian packages): `--node` asks only for what a node needs, the full run for
the test tools too, apt waits for a held lock, and a lock that stays held fails with apt's own
words."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE = ["python3", "python3-venv", "python3-pip", "ca-certificates"]


def _script(path: Path, body: str):
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def sandbox(tmp_path):
    """A copy of setup.sh in a tree whose .venv/bin/python, apt-get and dpkg-query record."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts/setup.sh", tmp_path / "scripts/setup.sh")
    log = tmp_path / "calls.log"
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (tmp_path / ".venv/bin").mkdir(parents=True)
    _script(tmp_path / ".venv/bin/python", f'echo "python $*" >> {log}\n')
    _script(fake / "dpkg-query", "exit 1\n")  # nothing is installed
    locked = tmp_path / "lock-held-for"
    _script(fake / "apt-get", f'''echo "apt-get $*" >> {log}
if [[ " $* " == *" update "* ]]; then
  n=$(cat {locked} 2>/dev/null || echo 0)
  if [ "$n" -gt 0 ]; then echo $((n - 1)) > {locked}
    echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1 (apt-get)" >&2
    exit 100; fi
fi
''')
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path), "APT_LOCK_POLL": "0",
           "APT_LOCK_WAIT": "3"}

    def run(*args, lock_held_for=0):
        locked.write_text(str(lock_held_for))
        log.write_text("")
        r = subprocess.run(["bash", "scripts/setup.sh", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
        return r, log.read_text().splitlines()

    if os.geteuid() != 0:
        _script(fake / "sudo", '"$@"\n')
    return run


def installed(calls):
    line = next(c for c in calls if c.startswith("apt-get") and " install " in c)
    assert "-o DPkg::Lock::Timeout=3" in line
    return line.split(" install -y -qq --no-install-recommends ")[1].split()


def test_node_setup_installs_only_what_a_node_needs(sandbox):
    r, calls = sandbox("--node")
    assert r.returncode == 0, r.stderr
    assert installed(calls) == NODE
    assert "python -m pip install -q -e ." in calls


def test_test_setup_adds_the_test_tools(sandbox):
    r, calls = sandbox()
    assert r.returncode == 0, r.stderr
    pkgs = installed(calls)
    assert pkgs[:len(NODE)] == NODE
    for p in ("qemu-system-arm", "mmdebstrap", "strace", "miniupnpd", "iproute2"):
        assert p in pkgs
    assert "python -m pip install -q -e .[test]" in calls


def test_a_held_apt_lock_is_waited_for(sandbox):
    r, calls = sandbox("--node", lock_held_for=2)
    assert r.returncode == 0, r.stderr
    assert "another apt holds the lock; waiting" in r.stdout
    assert sum(" update " in c + " " for c in calls) == 3 and installed(calls) == NODE


def test_a_lock_that_stays_held_fails_with_apts_words(sandbox):
    r, calls = sandbox("--node", lock_held_for=10)
    assert r.returncode != 0 and "Could not get lock" in r.stderr
    assert not any(" install " in c for c in calls)
