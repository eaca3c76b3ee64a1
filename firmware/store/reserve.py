"""A few MB of disk kept aside next to the database, given back when the disk is full.

Why: SQLite needs a little *new* disk space even to shrink the store or to open it: the -shm
index (32 KiB) and -wal file are created at open, and a delete writes WAL frames before the freed
pages can be reused. On a disk at 0 bytes free (another program filled the data partition, or a
quota larger than the partition) that space does not exist, so without a reserve the node can
neither evict nor restart -- it would stay down until someone frees space by hand. The reserve
is a preallocated file; releasing it (unlink) makes room for start-up and eviction, and it is
made again once the disk has room. Blocking calls: run them in a worker thread from trio.
"""

from __future__ import annotations

import os

RESERVE_BYTES = 4 << 20  # -shm + an eviction batch's WAL frames + the node's small files


class SpaceReserve:
    def __init__(self, path: str | os.PathLike, size: int = RESERVE_BYTES):
        self.path = os.fspath(path)
        self.size = size

    @property
    def held(self) -> bool:
        try:
            return os.stat(self.path).st_size >= self.size
        except OSError:
            return False

    def missing_bytes(self) -> int:
        """Disk the reserve would take if it were made now (0 when it is held)."""
        if self.size == 0:
            return 0
        try:
            return max(0, self.size - os.stat(self.path).st_blocks * 512)
        except OSError:
            return self.size

    def release(self) -> bool:
        """Give the space back to the file system; True if there was a reserve to release."""
        try:
            os.unlink(self.path)
            return True
        except FileNotFoundError:
            return False

    def restore(self, free_bytes: int | None, *, headroom: int) -> bool:
        """Make the reserve if the disk has `size + headroom` bytes free; True if held after.

        Never raises for a full or unwritable disk: the reserve is a safety margin, not a
        requirement, and a half-made file is removed.
        """
        if self.size == 0 or self.held:
            return True
        if free_bytes is None or free_bytes < self.size + headroom:
            return False
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            return True
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
