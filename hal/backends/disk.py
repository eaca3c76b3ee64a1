"""Disk facts for the storage guard: free space of the data dir and sectors written to the card.

Sectors written come from /sys/block/<disk>/stat (field 7, in 512-byte units whatever the
device's sector size), so the daily write budget counts what the card really absorbed,
SQLite's WAL and checkpoints included.
"""

import os

SECTOR = 512


class DiskSpace:
    def __init__(self, path, complaints, psutil_module=None):
        self.path = path
        self.complaints = complaints
        self.psutil = psutil_module

    def free_bytes(self):
        """Bytes available to an unprivileged writer, or None."""
        try:
            st = os.statvfs(self.path)
            self.complaints.clear("disk:space")
            return st.f_bavail * st.f_frsize
        except OSError as e:
            if self.psutil is not None:
                try:
                    return self.psutil.disk_usage(self.path).free
                except OSError:
                    pass
            self.complaints.problem(
                "disk:space", f"cannot read free space of {self.path}: {e.strerror}")
            return None


def find_block_device(root, path):
    """Whole-disk name (e.g. 'mmcblk0') holding `path`, via /sys/dev/block/MAJ:MIN; or None."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    return disk_of(root, os.major(dev), os.minor(dev))


def disk_of(root, major, minor):
    real = root.realpath(f"/sys/dev/block/{major}:{minor}")
    if real is None or not root.exists(real):
        return None
    if root.exists(real + "/partition"):
        real = os.path.dirname(real)
    name = os.path.basename(real)
    return name if root.exists(f"/sys/block/{name}/stat") else None


class BlockStats:
    """Bytes written to a block device since boot (sectors x 512), or None."""

    def __init__(self, root, device, complaints):
        self.root = root
        self.device = device
        self.complaints = complaints

    def written_bytes(self):
        where = f"/sys/block/{self.device}/stat"
        text = self.root.read_text(where)
        fields = text.split() if text else []
        try:
            sectors = int(fields[6])
        except (IndexError, ValueError):
            self.complaints.problem(
                "disk:stat", f"cannot read sectors written from {self.root.path(where)}: the "
                                    "daily write budget counts the node's own writes only")
            return None
        self.complaints.clear("disk:stat")
        return sectors * SECTOR
