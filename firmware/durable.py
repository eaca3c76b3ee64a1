"""Write a small file so that it is on the card when the call returns (or not at all).

Why: the box's owner pulls the plug without warning. A temp file that is fsync'd and renamed
is not enough: the rename lives in the directory, and until the directory itself is fsync'd a
power cut can leave the old file, an empty one, or none (homenode-node-id.txt read back empty
for ~30 s after first boot). Every file the box writes for its owner or for itself (key files,
node.json, the node config written from the boot partition, homenode-problems.txt, the
identity record, bandwidth.json) goes through `write_durably`.

Sequence: create `.<name>.<random>.tmp` in the same directory (mode set before any byte is
written), write, fsync the file, rename it over the target (or link it, when `exclusive`),
fsync the FILE again, then fsync the directory. The second file fsync is for FAT (the boot
partition): vfat keeps a file's size in its directory entry and a rename writes a new entry,
which only the renamed file's own fsync fills in; without it a power cut after the rename
left homenode-node-id.txt empty even with the directory synced (seen under QEMU). On ext4 it
costs nothing (the inode is clean). On any failure the temp file is removed and the target is
untouched.
"""

import errno
import os
import tempfile

__all__ = ["write_durably", "fsync_dir"]

_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK)


def fsync_dir(directory: str) -> None:
    """fsync a directory, so renames, links and unlinks in it survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path, data: bytes | str, mode: int = 0o644, *, exclusive: bool = False,
                  owner: tuple[int, int] | None = None) -> None:
    """Atomically replace (or, with `exclusive`, create: FileExistsError if it exists) `path`
    with `data`, durable on return. `mode` (and `owner`, a (uid, gid) for root writing into a
    service's directory) are applied before the data is written."""
    if isinstance(data, str):
        data = data.encode()
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    placed = False
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        if exclusive:
            _place_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
        placed = True
        os.fsync(fd)  # the file at its new name (vfat: the size in the new directory entry)
        os.close(fd)
        fd = -1
        fsync_dir(directory)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if not placed:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


def _place_exclusive(tmp: str, path: str) -> None:
    """Give `tmp` the name `path` unless `path` exists (FileExistsError)."""
    try:
        os.link(tmp, path)  # fails if `path` appeared meanwhile, unlike rename
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        # a filesystem without hard links (FAT: a USB stick for a backup): reserve the name,
        # then rename over the reservation
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(tmp, path)
        return
    os.unlink(tmp)
