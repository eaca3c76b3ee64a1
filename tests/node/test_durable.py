"""Files the box writes are durable when written: the file is fsync'd, renamed (or linked) into
place, and then its DIRECTORY is fsync'd (without that a power cut can lose the rename:
homenode-node-id.txt read back empty for ~30 s after first boot). Checked with strace on the
real syscalls, and by a census of the code that renames files."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from firmware.durable import write_durably
from tests.tools import require_tools

ROOT = pathlib.Path(__file__).resolve().parents[2]

WRITER = """
import sys
from firmware.durable import write_durably
from firmware.identity import Identity, write_key_file
write_durably(sys.argv[1] + "/node-id.txt", "ab" * 32 + "\\n")
write_key_file(sys.argv[1] + "/me.key", Identity.generate())
"""


def trace(tmp_path, code):
    require_tools("strace", package="strace")
    out = tmp_path / "trace.txt"
    subprocess.run(["strace", "-f", "-qq", "-o", str(out), "-e",
                    "trace=openat,fsync,fdatasync,rename,renameat,renameat2,link,linkat,close",
                    sys.executable, "-c", code, str(tmp_path)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    return out.read_text().splitlines()


def events(lines, directory):
    """(kind, detail) in order: file fsyncs, renames/links into `directory`, and fsyncs of a
    descriptor opened on `directory` itself."""
    fds, out = {}, []
    for line in lines:
        line = re.sub(r"^\d+ +", "", line)
        m = re.match(r'openat\(AT_FDCWD, "([^"]+)", ([^,)]+).*\)\s+= (\d+)', line)
        if m:
            fds[m.group(3)] = (m.group(1), "O_DIRECTORY" in m.group(2))
            continue
        m = re.match(r"f(?:data)?sync\((\d+)\)\s+= 0", line)
        if m and m.group(1) in fds:
            path, is_dir = fds[m.group(1)]
            out.append(("fsync_dir" if is_dir and path == directory else "fsync_file", path))
            continue
        m = re.match(r'(rename|renameat2?|link|linkat)\(.*"([^"]+)"(?:, \w+)?\)\s+= 0', line)
        if m and os.path.dirname(m.group(2)) == directory:
            out.append(("into_place", m.group(2)))
    return out


def test_every_write_is_file_fsync_then_rename_then_directory_fsync(tmp_path):
    ev = events(trace(tmp_path, WRITER), str(tmp_path))
    placed = [i for i, (kind, _) in enumerate(ev) if kind == "into_place"]
    targets = [ev[i][1] for i in placed]
    assert targets == [str(tmp_path / "node-id.txt"), str(tmp_path / "me.key")], ev
    for i in placed:
        assert ev[i - 1][0] == "fsync_file", ev  # the data is on disk before the name
        # then the file at its new name (vfat keeps the size in the new directory entry), then
        # the directory
        assert [kind for kind, _ in ev[i + 1:i + 3]] == ["fsync_file", "fsync_dir"], ev
        assert ev[i + 2][1] == str(tmp_path)


def test_write_durably_replaces_whole_and_sets_the_mode_first(tmp_path):
    path = tmp_path / "node.toml"
    write_durably(path, "a = 1\n", 0o600)
    write_durably(path, b"a = 2\n", 0o644)
    assert path.read_text() == "a = 2\n" and path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileExistsError):
        write_durably(path, "a = 3\n", exclusive=True)
    assert path.read_text() == "a = 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["node.toml"]  # no temp file left behind


def test_exclusive_create_without_hard_links(tmp_path, monkeypatch):
    """A filesystem without hard links (FAT, e.g. a USB stick for a backup): the name is
    reserved with O_EXCL, then the data renamed over it; an existing file is still refused."""
    import errno

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "backup.json"
    write_durably(path, "{}\n", 0o600, exclusive=True)
    assert path.read_text() == "{}\n" and path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_durably(path, "{...}\n", exclusive=True)
    assert path.read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["backup.json"]


# Code that puts files in place by rename must do it through firmware.durable. Files
# that rename on purpose without it are listed, with why.
PENDING = {
    # saved every persist_interval, fsync'd only every few minutes to spare the card: a cut
    # loses at most that much of the month's count (the counters only grow, so it errs low)
    "firmware/device/shaping.py": "bandwidth.json: frequent saves, fsync on a slower clock",
    # not data: a damaged history file renamed aside (history.bin.bad) for a diagnostics bundle
    "firmware/web/recorder.py": "renames a damaged history aside; saves go through the helper",
    # not data: a preallocated space reserve, made again whenever it is missing
    "firmware/store/reserve.py": "the store's disk-space reserve (no content to lose)",
    # not data: update bundles streamed to `.part` (fsync'd) then renamed, and a refused
    # bundle renamed `.refused`; a power cut only means fetching or refusing it again
    "firmware/update/sources.py": "bundle downloads and copies (fetched again after a cut)",
}
SCANNED = ["firmware", "hal", "image/device"]


def test_no_file_is_renamed_into_place_without_the_helper():
    offenders = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel == "firmware/durable.py":
                continue
            text = path.read_text()
            if re.search(r"os\.(replace|rename|link)\(|\.rename\(|\.replace\(tmp", text):
                offenders[rel] = True
    assert set(offenders) <= set(PENDING), sorted(set(offenders) - set(PENDING))
