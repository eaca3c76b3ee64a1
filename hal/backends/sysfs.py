"""Reading and writing kernel files (sysfs, procfs) under a configurable root.

Why a root: every hardware path the backends touch goes through `SysRoot`, so tests point it at
a fake tree in a tmp dir and the same code runs on a Pi with root "/".
Why `Complaints`: a broken sensor is read every few seconds; its problem must reach the log
once (and its recovery once), never once per read.
"""

import glob
import logging
import os


class SysRoot:
    def __init__(self, prefix="/"):
        self.prefix = os.path.abspath(prefix)

    def path(self, abs_path):
        """Host path of `abs_path` (an absolute path as on the device)."""
        return os.path.join(self.prefix, abs_path.lstrip("/"))

    def exists(self, abs_path):
        return os.path.exists(self.path(abs_path))

    def read_text(self, abs_path):
        """File content, or None when missing or unreadable (no exception)."""
        try:
            with open(self.path(abs_path), encoding="utf-8", errors="strict") as f:
                return f.read()
        except (OSError, UnicodeDecodeError, ValueError):
            return None

    def write_text(self, abs_path, text):
        """True when written. sysfs attributes take one write of the whole value."""
        try:
            with open(self.path(abs_path), "w", encoding="ascii") as f:
                f.write(text)
            return True
        except OSError:
            return False

    def glob(self, pattern):
        """Device-side absolute paths matching `pattern`, sorted."""
        base = self.prefix.rstrip("/")
        out = []
        for p in glob.glob(self.path(pattern)):
            out.append("/" + os.path.relpath(p, base) if base else p)
        return sorted(out)

    def realpath(self, abs_path):
        """Resolve symlinks inside the tree; returns a device-side path or None."""
        host = os.path.realpath(self.path(abs_path))
        base = self.prefix.rstrip("/") or "/"
        if base != "/" and not host.startswith(base + "/"):
            return None
        return "/" + os.path.relpath(host, base) if base != "/" else host


class Complaints:
    """Log each problem once until it clears; log the recovery once too."""

    def __init__(self, logger=None):
        self.log = logger or logging.getLogger("hal")
        self.active = {}

    def problem(self, key, message):
        if self.active.get(key) != message:
            first = key not in self.active
            self.active[key] = message
            if first:
                self.log.warning("%s", message)

    def clear(self, key, message=None):
        if key in self.active:
            del self.active[key]
            if message:
                self.log.info("%s", message)
