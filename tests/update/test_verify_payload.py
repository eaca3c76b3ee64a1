"""`rauc.verify_payload`: a bundle whose payload fails dm-verity is refused before RAUC installs
anything, and the check always unmounts what it mounted. The real thing (a tampered bundle on a
booted box, nothing written to slot B) is tests/image/test_update.py; this drives the logic
with RAUC's and findmnt's answers recorded."""

import errno
import subprocess

import pytest

from firmware.update import rauc


class Box:
    """Answers `rauc mount`, `findmnt` and `umount` as the box does; records every command."""

    def __init__(self, mount_ok=True):
        self.mount_ok = mount_ok
        self.calls = []

    def run(self, cmd, **kw):
        self.calls.append(cmd[:2])
        if cmd[:2] == ["rauc", "mount"]:
            if not self.mount_ok:
                return subprocess.CompletedProcess(cmd, 1, "", "Failed to mount bundle: "
                                                   "signature verification failed")
            return subprocess.CompletedProcess(cmd, 0, "Mounted bundle at x", "")
        if cmd[0] == "findmnt":
            return subprocess.CompletedProcess(cmd, 0, "/dev/dm-0\n", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")


def test_a_payload_that_reads_back_whole_passes_and_is_unmounted(tmp_path):
    box, read = Box(), []
    rauc.verify_payload("/data/b.raucb", run=box.run, under=str(tmp_path), read=read.append)
    assert read == ["/dev/dm-0"]
    assert box.calls[:2] == [["rauc", "mount"], ["findmnt", "-n"]]
    assert box.calls[2][0] == "umount" and box.calls[2][1].startswith(str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # the mount point is removed again


def test_a_verity_read_error_is_a_refusal_naming_the_cause(tmp_path):
    box = Box()

    def eio(device):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(rauc.RaucError, match="changed after it was signed .verity: Input/output"):
        rauc.verify_payload("/data/b.raucb", run=box.run, under=str(tmp_path), read=eio)
    assert box.calls[-1][0] == "umount"
    assert list(tmp_path.iterdir()) == []


def test_a_bundle_rauc_cannot_mount_is_refused_without_reading(tmp_path):
    box = Box(mount_ok=False)
    with pytest.raises(rauc.RaucError, match="signature verification failed"):
        rauc.verify_payload("/data/b.raucb", run=box.run, under=str(tmp_path),
                            read=lambda d: pytest.fail("read after a failed mount"))
    assert box.calls == [["rauc", "mount"]]
    assert list(tmp_path.iterdir()) == []
