"""A data dir or store the node cannot use: each case is one line naming the real cause
(permission, read-only mount, missing path) and its fix -- never "corrupt", never a bare
"Permission denied" with an address, never a traceback -- and nothing on disk is changed.

Root ignores file modes, so the node runs as `nobody` (setpriv drops the uid); the read-only
case mounts a tmpfs and remounts it read-only. Both need root, as CI has: without it these
tests FAIL with the reason rather than skip.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import REPO, write_toml

pytestmark = pytest.mark.slow

NOBODY = 65534
NEVER = ("corrupt", "move the file aside", "Traceback", "127.0.0.1:0")


def _need_root():
    if os.geteuid() != 0:
        pytest.fail("these tests drop to uid nobody with setpriv and mount a tmpfs: run them as "
                    "root (CI does)")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is missing (apt-get install util-linux)")


@pytest.fixture
def base():
    """A world-traversable temp dir (pytest's tmp_path is root-only, 0700)."""
    _need_root()
    d = tempfile.mkdtemp(prefix="hn-perm-", dir="/tmp")
    os.chmod(d, 0o755)
    write_toml(os.path.join(d, "homenode.toml"), {
        "node": {"listen_port": 0}, "network": {"enabled": False}})
    os.chmod(os.path.join(d, "homenode.toml"), 0o644)
    yield d
    subprocess.run(["umount", "-l", os.path.join(d, "ro")], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(*argv, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run(_nobody(*argv), capture_output=True, text=True, timeout=timeout,
                          cwd="/tmp", env=_env())


def _nobody(*argv):
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            sys.executable, *argv]


def _env():
    return {**os.environ, "PYTHONPATH": REPO, "HOME": "/tmp"}


def run_node(base, data_dir, timeout=30) -> subprocess.CompletedProcess:
    """`homenode run` as nobody. One that starts (it writes node.json with its pid) is stopped
    with SIGTERM and reported with 'SERVING' on stdout; one that refuses exits by itself."""
    proc = subprocess.Popen(
        _nobody("-m", "firmware.cli", "run", "--config", os.path.join(base, "homenode.toml"),
                "--data-dir", data_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp", env=_env())
    deadline = time.monotonic() + timeout
    serving = False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with open(os.path.join(data_dir, "node.json")) as f:
                    serving = json.load(f).get("pid") == proc.pid
            except (OSError, ValueError):
                pass
            if serving:
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       ("SERVING\n" if serving else "") + out, err)


def make_node_data(base, parent=None) -> str:
    """A data dir of nobody's, filled by a real node run as nobody: node.key,
    messages.sqlite3, node.lock."""
    d = os.path.join(parent or base, "data")
    os.mkdir(d, 0o700)
    os.chown(d, NOBODY, NOBODY)
    r = run_node(base, d)
    assert "SERVING" in r.stdout, r.stdout + r.stderr
    return d


def snapshot(path) -> dict:
    out = {}
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[p] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(p).st_mode)
    return out


def chown_root(path):
    os.chown(path, 0, 0)


# (case id, how to break a data dir made by nobody, what the one line must say)
CASES = [
    ("dir-owned-by-root", lambda d: chown_root(d),
     ["is not readable and writable by user nobody", "permission", "chown"]),
    ("dir-unreadable", lambda d: os.chmod(d, 0o300),
     ["is not readable and writable by user nobody", "mode 0300", "chown"]),
    ("store-owned-by-root", lambda d: chown_root(os.path.join(d, "messages.sqlite3")),
     ["cannot read and write: messages.sqlite3 (owner uid 0", "permission", "chown"]),
    ("store-read-only-file", lambda d: os.chmod(os.path.join(d, "messages.sqlite3"), 0o400),
     ["messages.sqlite3 (owner uid 65534, mode 0400)", "permission"]),
    ("wal-owned-by-root", lambda d: (open(os.path.join(d, "messages.sqlite3-wal"), "wb").close(),
                                     chown_root(os.path.join(d, "messages.sqlite3-wal"))),
     ["messages.sqlite3-wal (owner uid 0", "permission"]),
    ("key-owned-by-root", lambda d: chown_root(os.path.join(d, "node.key")),
     ["node.key (owner uid 0, mode 0600)", "permission", "chown"]),
    ("lock-owned-by-root", lambda d: chown_root(os.path.join(d, "node.lock")),
     ["node.lock (owner uid 0", "permission"]),
]


@pytest.mark.parametrize("case, breakage, must_say", CASES, ids=[c[0] for c in CASES])
def test_unusable_data_dir_is_named_for_what_it_is(base, case, breakage, must_say):
    d = make_node_data(base)
    breakage(d)
    before = snapshot(d)
    r = run_node(base, d)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for word in must_say:
        assert word in lines[0], lines[0]
    for word in NEVER:
        assert word not in r.stderr, r.stderr
    assert snapshot(d) == before  # nothing was changed, let alone moved aside


def test_missing_data_dir_that_cannot_be_created(base):
    parent = os.path.join(base, "root-only")
    os.mkdir(parent, 0o755)
    r = run_node(base, os.path.join(parent, "sub", "data"))
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "\n" not in line
    assert "does not exist and cannot be created" in line and "not writable" in line
    assert not any(w in line for w in NEVER), line


def test_data_dir_is_a_file(base):
    path = os.path.join(base, "afile")
    with open(path, "w") as f:
        f.write("not a directory\n")
    os.chown(path, NOBODY, NOBODY)
    r = run_node(base, path)
    assert r.returncode == 1
    assert "is not a directory" in r.stderr and "\n" not in r.stderr.strip()


def test_read_only_mount(base):
    mnt = os.path.join(base, "ro")
    os.mkdir(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.fail(f"cannot mount a tmpfs (run as root, as CI does): {r.stderr.strip()}")
    os.chown(mnt, NOBODY, NOBODY)
    d = make_node_data(base, mnt)
    before = snapshot(d)
    subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
    r = run_node(base, d)
    assert r.returncode == 1, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line, line
    assert "read-only file system" in line and "remount it read-write" in line
    assert not any(w in line for w in NEVER), line
    assert snapshot(d) == before


# The store on its own (whatever wires it up later must get the same truth): MessageStore.open
# as nobody on a directory ensure_data_dir has not vetted.
STORE_CASES = [
    ("store-dir-not-writable", lambda d: chown_root(d), "is not readable and writable"),
    ("store-file-not-writable", lambda d: os.chmod(os.path.join(d, "messages.sqlite3"), 0o400),
     "messages.sqlite3 is not readable and writable by user nobody"),
    ("store-file-unreadable", lambda d: chown_root(os.path.join(d, "messages.sqlite3")),
     "messages.sqlite3 is not readable and writable by user nobody"),
]


@pytest.mark.parametrize("case, breakage, must_say", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_store_open_names_permission_problems(base, case, breakage, must_say):
    d = make_node_data(base)
    breakage(d)
    before = snapshot(d)
    r = as_nobody("-c", (
        "from firmware.store import MessageStore, StoreOpenError\n"
        "try:\n"
        f"    MessageStore.open({os.path.join(d, 'messages.sqlite3')!r}, quota_bytes=1 << 20,"
        " clock_ms=lambda: 0).close()\n"
        "except StoreOpenError as e:\n"
        "    print('REFUSED', e)\n"))
    assert r.stdout.startswith("REFUSED"), r.stdout + r.stderr
    assert must_say in r.stdout and "permission" in r.stdout, r.stdout
    assert "corrupt" not in r.stdout and "mv " not in r.stdout
    assert snapshot(d) == before


def test_a_root_owned_lost_and_found_is_fine(base):
    """On the appliance the data dir is the data partition's root, which holds lost+found."""
    d = make_node_data(base)
    os.mkdir(os.path.join(d, "lost+found"), 0o700)
    r = run_node(base, d)
    assert "SERVING" in r.stdout, r.stdout + r.stderr
