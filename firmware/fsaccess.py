"""Why a file or directory cannot be used, named as what it is: missing, permission, read-only
mount, or a full disk -- never "corrupt".

Why: the operator's fix differs completely. A permission problem is fixed with `chown` (often
the node was run once as root); a read-only mount (on a Pi: the kernel remounts the card
read-only after I/O errors) needs a remount or a new card; "corrupt, move the file aside" would
lose every stored message for either. Each function returns one line that says the cause and the
fix, or None when it finds nothing wrong. Only os calls; safe to import from anywhere.
"""

import os
import stat

# statvfs: free space below this counts as "full" for start-up diagnosis
NEARLY_FULL_BYTES = 64 * 1024


def _who() -> str:
    uid = os.geteuid()
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _owner_mode(st: os.stat_result) -> str:
    return f"owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"


def read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def free_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def read_only_problem(path: str) -> str:
    return (f"{path} is on a read-only file system, so nothing can be stored; remount it "
            f"read-write (on a Pi the kernel remounts a card with I/O errors read-only: check "
            f"`dmesg`, and replace the card if it is failing); the data on it is fine")


def directory_problem(path: str, *, create_hint: str = "") -> str | None:
    """What stops this process from creating, reading and writing files in directory `path`."""
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        while parent != "/" and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if read_only_mount(parent):
            return (f"directory {path} does not exist and cannot be created: {parent} is on a "
                    f"read-only file system; remount it read-write or choose another "
                    f"directory{create_hint}")
        if not os.access(parent, os.X_OK):
            return (f"cannot reach {path}: {parent} is not searchable by {_who()} "
                    f"({_owner_mode(os.stat(parent))}): a permission problem; fix its mode or "
                    f"owner, or choose another directory{create_hint}")
        if not os.access(parent, os.W_OK):
            return (f"directory {path} does not exist and cannot be created: {parent} is not "
                    f"writable by {_who()}; create it (sudo mkdir -p {path} && sudo chown "
                    f"{os.geteuid()} {path}) or choose another directory{create_hint}")
        return f"directory {path} does not exist{create_hint}"
    if not os.path.isdir(path):
        return f"{path} is not a directory; remove or rename it, or choose another directory"
    if read_only_mount(path):
        return read_only_problem(path)
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        st = os.stat(path)
        return (f"directory {path} is not readable and writable by {_who()} "
                f"({_owner_mode(st)}): a permission problem, the data in it is fine; fix with "
                f"`sudo chown -R {os.geteuid()} {path}` (was the node run as another user, e.g. "
                f"root?) or run the node as the directory's owner")
    return None


def file_problem(path: str, *, write: bool = True) -> str | None:
    """What stops this process from reading (and writing) the existing file `path`; None if it
    is missing (creating it is the directory's business) or usable."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        return (f"cannot reach {path}: a directory on its path is not searchable by {_who()}; "
                f"a permission problem: fix the directory's owner or mode")
    if stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory, not a file; move it aside"
    if write and read_only_mount(path):
        return read_only_problem(path)
    if os.access(path, os.R_OK | (os.W_OK if write else 0)):
        return None
    what = "readable and writable" if write else "readable"
    return (f"{path} is not {what} by {_who()} ({_owner_mode(st)}): a permission problem, the "
            f"file is fine; fix with `sudo chown {os.geteuid()} {path}` (was the node run as "
            f"another user, e.g. root?) or run the node as the file's owner")


def disk_full_problem(path: str) -> str | None:
    free = free_bytes(os.path.dirname(os.path.abspath(path)) or ".")
    if free is not None and free < NEARLY_FULL_BYTES:
        return (f"the disk holding {path} is full ({free} bytes free); free some space on it "
                f"(the stored data is fine) and start again")
    return None


def foreign_entries_problem(directory: str) -> str | None:
    """Regular files directly in `directory` this process cannot read and write (typically left
    by a run as another user, e.g. root), named in one line with the fix; None if there are none.
    Directories are not looked at: a data partition's root holds a root-owned `lost+found`."""
    bad = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None  # directory_problem's business
    for name in names:
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if not os.access(path, os.R_OK | os.W_OK):
            bad.append(f"{name} ({_owner_mode(st)})")
    if not bad:
        return None
    shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
    return (f"{directory} holds files {_who()} cannot read and write: {shown}. A permission "
            f"problem, the data is fine (was the node run as another user, e.g. root?); fix "
            f"with `sudo chown -R {os.geteuid()} {directory}` or run the node as their owner")
