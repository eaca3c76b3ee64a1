"""What the update tooling tells the node (LED, status, page) and keeps across boots.

Two files, both written by root-side update tooling only:
  /run/homenode-update/status.json   this boot's summary: phase (installing / trial), booted slot
                                     and version, the other slot, the last result. Read by the
                                     node through `UpdateStatus` (it runs unprivileged and must
                                     never talk to RAUC or the bootloader itself).
  /data/system/update/history.json   on the shared data partition (survives updates and
                                     rollbacks): the install in flight (`pending`), recent
                                     results, the last release index seen.
"""

import contextlib
import fcntl
import json
import os
import time

from firmware.durable import write_durably

RUNTIME_STATUS = "/run/homenode-update/status.json"
HISTORY = "/data/system/update/history.json"
RELEASE_FILE = "/etc/homenode/release.json"  # in each root filesystem: its version and build
UPDATING_PHASES = ("installing", "trial")
MAX_EVENTS = 20


class UpdateStatus:
    """The node's read-only view of the update state (cheap: re-reads only when it changed).

    `phase()` is "updating" while a bundle installs or the box runs a new system on trial, else
    None; `info()` is the summary for `homenode status` (slot, version, last result, whether the
    box went back to the previous system)."""

    def __init__(self, path: str = RUNTIME_STATUS):
        self.path = path
        self._stamp = None
        self._data: dict = {}

    def _read(self) -> dict:
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self._data = None, {}
            return self._data
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                with open(self.path) as f:
                    data = json.load(f)
                self._data = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._data = {"error": f"unreadable {self.path}"}
            self._stamp = stamp
        return self._data

    def phase(self) -> str | None:
        return "updating" if self._read().get("phase") in UPDATING_PHASES else None

    def health_phase(self) -> tuple[str, str] | None:
        """(phase, reason) for the health monitor (`Node(update_phase=...)`), or None."""
        data = self._read()
        if data.get("phase") == "installing":
            progress = data.get("progress")
            done = f" ({progress} %)" if isinstance(progress, int) else ""
            return "updating", f"installing a system update{done}; keep the power on"
        if data.get("phase") == "trial":
            return "updating", "running a new system on trial; it is kept once the node runs well"
        return None

    def info(self) -> dict:
        data = self._read()
        if not data:
            return {"available": False}
        last = data.get("last") if isinstance(data.get("last"), dict) else {}
        return {
            "available": True,
            "phase": data.get("phase"),
            "progress": data.get("progress"),
            "slot": data.get("slot"),
            "version": data.get("version"),
            "boot": data.get("boot"),
            "other_slot": data.get("other"),
            "last_result": last.get("result"),
            "last_version": last.get("version"),
            "last_reason": last.get("reason"),
            "rolled_back": bool(data.get("rolled_back")),
            "channel": data.get("channel"),
        }


# --- writing (root side) ------------------------------------------------------------------------

def write_json(path: str, data: dict) -> None:
    """Atomic and durable replace (firmware.durable; on /run, a tmpfs, the syncs cost nothing)."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    write_durably(path, json.dumps(data, indent=1, sort_keys=True) + "\n", 0o644)


def write_text(path: str, text: str) -> None:
    """Durable replace: homenode-update.txt on the FAT boot partition is read after power cuts."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    write_durably(path, text, 0o644)


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}


class History:
    """The persistent record on the data partition (one small JSON file, replaced atomically).

    Every change is a transaction, `with history.change():` an exclusive lock on a file beside
    it, the record read again, changed, written. Why: the health gate and the bundle installers
    are separate processes started at boot; each used to write back the whole record it had read
    when it started, so an installer refusing a bundle during a trial could undo the gate's
    commit that came in between."""

    def __init__(self, path: str = HISTORY, clock=time.time):
        self.path = path
        self.clock = clock
        self.data = read_json(path)
        self._lock_fd: int | None = None

    def refresh(self) -> None:
        """Read the record again (another process may have changed it since)."""
        if self._lock_fd is None:
            self.data = read_json(self.path)

    @contextlib.contextmanager
    def change(self):
        """Lock, read again, let the caller change `data`, write. A nested `change()` joins the
        one already open (written once, when the outer one ends). Interrupted by an exception,
        nothing is written and `data` is read again."""
        if self._lock_fd is not None:
            yield self
            return
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            self.data = read_json(self.path)
            try:
                yield self
            except BaseException:
                self.data = read_json(self.path)
                raise
            write_json(self.path, self.data)
        finally:
            self._lock_fd = None
            os.close(fd)  # closing the only descriptor releases the lock

    @property
    def pending(self) -> dict | None:
        p = self.data.get("pending")
        return p if isinstance(p, dict) else None

    def _changing(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("the update history is changed only inside `with change():`")

    def set_pending(self, record: dict | None) -> None:
        self._changing()
        if record is None:
            self.data.pop("pending", None)
        else:
            self.data["pending"] = record

    def event(self, result: str, version: str | None, reason: str, **extra) -> dict:
        self._changing()
        ev = {"result": result, "version": version, "reason": reason,
              "time": int(self.clock()), **extra}
        events = [e for e in self.data.get("events", []) if isinstance(e, dict)]
        self.data["events"] = (events + [ev])[-MAX_EVENTS:]
        return ev

    @property
    def last(self) -> dict | None:
        events = self.data.get("events") or []
        return events[-1] if events else None

    def declined(self, key: str) -> bool:
        """A bundle that failed its trial or was refused is not retried by itself."""
        return key in self.data.get("declined", [])

    def declined_releases(self) -> frozenset:
        """The release channel's refused releases (by the index's sha256 of the bundle)."""
        return frozenset(self.data.get("declined_sha256", []))

    def decline(self, key: str, *, release: bool = False) -> None:
        """`key`: the bundle's (rauc info: build + image checksums), or with `release` the sha256
        the release index gives for it. The last MAX_EVENTS of each are kept."""
        self._changing()
        name = "declined_sha256" if release else "declined"
        declined = [h for h in self.data.get(name, []) if h != key]
        self.data[name] = (declined + [key])[-MAX_EVENTS:]


def read_release(root: str = "/") -> dict:
    """This root filesystem's release record (version, build) from the image build."""
    return read_json(os.path.join(root, RELEASE_FILE.lstrip("/")))
