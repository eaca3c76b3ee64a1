"""Power-cut durability, checked at the system-call level: no ack before the WAL is fsync'd.

A real power cut cannot be staged here, so this checks what it depends on. The putter runs under
strace with one putter task and the default adaptive committer (so each ack's commit is the last
WAL activity before it, one commit per put): at every
acknowledgement written to stdout, every write to the -wal file must already be followed by an
fdatasync/fsync of that file. With synchronous=NORMAL this fails (tried: the WAL is only synced
at checkpoints).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")


def wal_unsynced_at_acks(trace: str) -> tuple[int, int, int]:
    """Replay the trace: (acks, acks seen while the WAL had unsynced writes, WAL syncs)."""
    wal_fds: set[int] = set()
    resumed_fd: dict[str, int] = {}  # thread id -> fd of its unfinished sync call
    unsynced = False
    acks = bad = syncs = 0
    for raw in trace.splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        _pid, resumed, call, rest = m.groups()
        if resumed:  # a call that started earlier and completes here
            if resumed in ("fsync", "fdatasync") and resumed_fd.get(_pid) in wal_fds:
                unsynced, syncs = False, syncs + 1
            continue
        fd_match = re.match(r"(\d+)", rest)
        fd = int(fd_match.group(1)) if fd_match else None
        if call == "openat" and "-wal\"" in rest and "= " in rest:
            result = rest.rsplit("= ", 1)[1].split()[0]
            if result.isdigit():
                wal_fds.add(int(result))
        elif call == "close" and fd in wal_fds:
            wal_fds.discard(fd)
        elif call in ("pwrite64", "write") and fd in wal_fds:
            unsynced = True
        elif call in ("fsync", "fdatasync") and fd in wal_fds:
            if "<unfinished" in rest:
                resumed_fd[_pid] = fd
            else:
                unsynced, syncs = False, syncs + 1
        elif call == "write" and fd == 1 and wal_fds:  # (before the WAL: a child's output)
            acks += 1
            bad += unsynced
    return acks, bad, syncs


@pytest.mark.slow
async def test_no_ack_before_the_wal_is_synced(tmp_path):
    if shutil.which("strace") is None:  # fail, not skip: a skipped durability check proves nothing
        pytest.fail("strace is missing: run scripts/setup.sh (apt-get install strace)")
    trace_file = tmp_path / "trace.txt"
    db = tmp_path / "messages.sqlite3"
    count = 40
    subprocess.run(
        ["strace", "-f", "-qq", "-s", "0", "-o", str(trace_file),
         "-e", "trace=openat,close,write,pwrite64,fsync,fdatasync",
         sys.executable, str(ROOT / "tests/store/crash_putter.py"), str(db), "0", "1", str(count)],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acks, bad, syncs = wal_unsynced_at_acks(trace_file.read_text())
    assert acks == count
    assert bad == 0, f"{bad} of {acks} acks were written while the WAL had unsynced writes"
    assert syncs >= count  # one commit (and WAL sync) per sequential put
