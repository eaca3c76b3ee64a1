"""The updater on the device (root): install a bundle, settle the last install at boot, keep the
runtime status the node reads. RAUC writes the slots; this decides when and records what happened.

Every step that matters across a power cut is on the data partition before it takes effect:
the install record (`pending`) is written before RAUC starts, a rollback's reason before the
reboot that carries it out, so the next boot can always tell what happened.
"""

import contextlib
import fcntl
import os
import subprocess
import time

from firmware.update import layout
from firmware.update import rauc as rauc_cmd
from firmware.update.bootstate import boot_facts, read_cmdline
from firmware.update.gate import (
    COMMITTED,
    IDLE,
    INTERRUPTED,
    ROLLED_BACK,
    TRIAL,
    WAITING,
    classify,
)
from firmware.update.settings import UpdateSettings
from firmware.update.status import (
    RUNTIME_STATUS,
    History,
    read_release,
    write_json,
)

PROBLEMS_NOTE = os.path.join(layout.BOOTFS_MOUNT, "homenode-update.txt")
WORK_DIR = "/run/homenode-update"  # where a bundle is mounted to read it through before install


class UpdateRefused(RuntimeError):
    """The bundle was not installed; the message says why (nothing was written to any slot)."""


class UpdateDeferred(UpdateRefused):
    """Not installed now for a passing reason (a system on trial, a restart under way): the
    source keeps the bundle and offers it again later; it is not declined."""


class Updater:
    def __init__(self, *, settings: UpdateSettings | None = None, history: History | None = None,
                 run=subprocess.run, run_lines=rauc_cmd.popen_lines,
                 runtime_status: str = RUNTIME_STATUS, cmdline: str | None = None,
                 release_root: str = "/", note_path: str | None = PROBLEMS_NOTE, log=None,
                 clock=time.time, tryboot=None, work_dir: str = WORK_DIR):
        self.settings = settings or UpdateSettings()
        self.history = history or History()
        self.run, self.run_lines = run, run_lines
        self.runtime_status = runtime_status
        self._cmdline = cmdline
        self.release = read_release(release_root)
        self.note_path = note_path
        self.log = log or (lambda msg: print(f"homenode-update: {msg}", flush=True))
        self.clock = clock
        self.tryboot = tryboot
        self.work_dir = work_dir
        self.extra: dict = {}
        self._last_status: dict = {}

    # -- facts ---------------------------------------------------------------------------------

    @property
    def cmdline(self) -> str:
        if self._cmdline is None:
            self._cmdline = read_cmdline()
        return self._cmdline

    def facts(self):
        return boot_facts(self.cmdline, run=self.run, tryboot=self.tryboot)

    @property
    def version(self) -> str:
        return str(self.release.get("version") or "unknown")

    # -- the runtime summary the node reads -----------------------------------------------------

    def write_status(self, phase: str | None = None, progress: int | None = None,
                     rolled_back: bool | None = None, slots: bool = False) -> dict:
        """`slots`: also ask RAUC what each slot holds (at boot; not for every progress line)."""
        try:
            facts = self.facts()
            slot, boot = facts.booted, facts.mode
            if phase is None and classify(facts, self.history.pending)[0] == TRIAL:
                phase = "trial"  # an installer's report during a trial must not end "updating"
            other = {"slot": layout.other(slot).name,
                     "state": "bad" if layout.other(slot).name in facts.bad else "good",
                     "next_boot": facts.primary}
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            slot, boot, other = None, None, {"error": str(e)}
        if slots and slot:
            try:
                held = rauc_cmd.slot_versions(rauc_cmd.status(self.run))
                other["version"] = (held.get(other["slot"]) or {}).get("version")
            except (rauc_cmd.RaucError, OSError, ValueError, subprocess.SubprocessError) as e:
                self.log(f"rauc status: {e}")
        elif self._last_status:
            other.setdefault("version", self._last_status.get("other", {}).get("version"))
        if rolled_back is None:
            last = self.history.last or {}
            rolled_back = last.get("result") == ROLLED_BACK
        data = {"phase": phase, "progress": progress, "slot": slot, "boot": boot,
                "version": self.version, "build": self.release.get("build"), "other": other,
                "last": self.history.last, "rolled_back": rolled_back,
                "channel": self.settings.channel, "updated": int(self.clock()), **self.extra}
        write_json(self.runtime_status, data)
        self._last_status = data
        return data

    def note(self, text: str) -> None:
        """A line for the owner on the boot partition (readable on any PC)."""
        if not self.note_path:
            return
        try:
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.clock()))
            with open(self.note_path, "w") as f:
                f.write(f"{stamp}: {text}\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self.log(f"could not write {self.note_path}: {e}")

    # -- installing ---------------------------------------------------------------------------

    def check_bundle(self, path: str) -> rauc_cmd.BundleInfo:
        if not os.path.isfile(path):
            raise UpdateRefused(f"{path}: no such bundle file")
        try:
            info = rauc_cmd.info(path, run=self.run)
        except rauc_cmd.RaucError as e:
            raise UpdateRefused(f"{os.path.basename(path)} refused: {e}") from None
        if info.compatible != layout.COMPATIBLE:
            raise UpdateRefused(f"{os.path.basename(path)} is for {info.compatible!r}, this box "
                                f"is {layout.COMPATIBLE!r}")
        try:
            rauc_cmd.verify_payload(path, run=self.run, under=self.work_dir)
        except rauc_cmd.RaucError as e:
            raise UpdateRefused(f"{os.path.basename(path)} refused: {e}") from None
        return info

    def apply(self, path: str, source: str = "command", reboot: bool | None = None,
              on_installed=None, checked: rauc_cmd.BundleInfo | None = None) -> str:
        """Install `path` into the other slot; returns a one-line result. Raises UpdateRefused
        (nothing written) or rauc_cmd.RaucError (install failed; the other slot is marked bad
        and the running system stays). `on_installed()` runs once the install is on record,
        before any restart (the boot partition deletes its copy then). `checked`: what
        `check_bundle` said of this file just before (the bundle sources check first to skip
        running and declined versions; the payload is then not read through a second time).

        One install at a time: the USB stick, the boot partition and the release channel are
        separate units that may find a bundle at the same moment; the second waits for the
        first, and is deferred if the first is restarting the box into its system."""
        with self._one_install():
            return self._apply(path, source, reboot, on_installed, checked)

    @contextlib.contextmanager
    def _one_install(self):
        lock = os.path.join(os.path.dirname(self.history.path), "install.lock")
        os.makedirs(os.path.dirname(lock), mode=0o755, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log("another update is being installed; waiting for it to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _apply(self, path: str, source: str, reboot: bool | None, on_installed, checked) -> str:
        facts = self.facts()
        self.history.refresh()
        self._defer_if_busy(facts)  # early, before reading a whole bundle
        info = checked
        if info is None:
            try:
                info = self.check_bundle(path)
            except UpdateRefused as e:
                self.record_refusal(str(e), None)
                raise
        target = layout.other(facts.booted).name
        with self.history.change():
            self._defer_if_busy(facts)  # for certain: the gate may have settled since
            self.history.set_pending({"slot": target, "version": info.version, "key": info.key,
                                      "source": source, "from_slot": facts.booted,
                                      "from_version": self.version,
                                      "started": int(self.clock()), "tried": False})
        self.log(f"installing {info.version} ({source}) into slot {target}")
        self.write_status(phase="installing", progress=0)
        last = [-1]

        def progress(pct: int, msg: str) -> None:
            if pct != last[0]:
                last[0] = pct
                self.write_status(phase="installing", progress=pct)

        try:
            rauc_cmd.install(path, progress, self.run_lines)
        except rauc_cmd.RaucError as e:
            result = "refused" if _is_refusal(str(e)) else "failed"
            with self.history.change():
                self.history.set_pending(None)
                self.history.event(result, info.version, str(e), source=source)
                if result == "refused":
                    self.history.decline(info.key)
            self.write_status()
            self.note(f"update {info.version} was not installed: {e}")
            self.log(f"install of {info.version} {result}: {e}")
            raise
        with self.history.change():
            self.history.set_pending(dict(self.history.pending or {}, installed=True))
            self.history.event("installed", info.version, f"installed into slot {target}",
                               source=source)
        self.log(f"{info.version} installed into slot {target}")
        if on_installed:
            on_installed()
        self.note(f"update {info.version} installed; the box restarts into it and keeps it once "
                  "it runs well")
        do_reboot = self.settings.reboot if reboot is None else reboot
        self.write_status(phase=None)
        if do_reboot:
            self.reboot_into_new(facts.mode)
            return f"installed {info.version} into slot {target}; restarting into it"
        return f"installed {info.version} into slot {target}; it starts at the next restart"

    def _defer_if_busy(self, facts) -> None:
        pending = self.history.pending
        if classify(facts, pending)[0] == TRIAL:
            raise UpdateDeferred("the running system is still on trial after an update; wait "
                                 "until it is kept (homenode update status)")
        if pending and pending.get("restarting"):
            raise UpdateDeferred(f"the box is restarting into {pending.get('version')}; this "
                                 "bundle waits until it has")

    def record_refusal(self, why: str, version: str | None) -> None:
        with self.history.change():
            self.history.event("refused", version, why)
        self.write_status()
        self.note(why)
        self.log(why)

    def reboot_into_new(self, mode: str) -> None:
        """Restart into the new system; on record first, so no other install starts meanwhile
        (tryboot: the firmware tries the new slot once; `tried` lets the next boot tell)."""
        with self.history.change():
            self.history.set_pending(dict(self.history.pending or {}, restarting=True,
                                          **({"tried": True} if mode == "tryboot" else {})))
        if mode == "tryboot":
            self.run(["systemctl", "reboot", "0 tryboot"], check=False)
        else:
            self.run(["systemctl", "reboot"], check=False)

    # -- at boot ------------------------------------------------------------------------------

    def settle(self) -> tuple[str, str]:
        """Decide what the last install came to; record it. Returns (situation, reason); the
        caller runs the health gate when the situation is TRIAL."""
        facts = self.facts()
        with self.history.change():
            pending = self.history.pending
            situation, reason = classify(facts, pending)
            version = (pending or {}).get("version")
            if situation == COMMITTED:
                self.history.event(COMMITTED, version, reason,
                                   replaced=(pending or {}).get("from_version"))
                self.history.set_pending(None)
            elif situation == ROLLED_BACK:
                self._record_rollback(pending, reason)
            elif situation == INTERRUPTED:
                self.history.event(INTERRUPTED, version, reason)
                self.history.set_pending(None)
            elif situation == WAITING and pending.get("restarting"):
                # the restart came and did not switch systems: installs may go on
                self.history.set_pending({k: v for k, v in pending.items() if k != "restarting"})
        if situation == ROLLED_BACK:
            self._rolled_back(facts, pending, reason)
        elif situation == INTERRUPTED:
            self.note(f"update {version} was interrupted before it was installed; "
                      f"{self.version} runs as before")
        self.log(f"boot: slot {facts.booted} ({facts.mode}), {situation}"
                 + (f": {reason}" if reason else ""))
        self.write_status(phase="trial" if situation == TRIAL else None,
                          rolled_back=situation == ROLLED_BACK or None, slots=True)
        return situation, reason

    def _record_rollback(self, pending: dict, reason: str) -> None:
        self.history.event(ROLLED_BACK, pending.get("version"), reason, slot=pending.get("slot"),
                           running=self.version)
        if pending.get("key"):
            self.history.decline(pending["key"])
        self.history.set_pending(None)

    def _rolled_back(self, facts, pending: dict, reason: str) -> None:
        """After the rollback is on record: the failed slot marked bad, the owner told."""
        version = pending.get("version")
        failed = pending.get("slot")
        if failed and failed not in facts.bad:
            try:
                rauc_cmd.mark("bad", failed, run=self.run)
            except rauc_cmd.RaucError as e:
                self.log(f"could not mark slot {failed} bad: {e}")
        self.note(f"update {version} was rolled back: {reason}. The box runs {self.version} "
                  "again.")
        self.log(f"ROLLED BACK {version}: {reason}; running {self.version} in slot "
                 f"{facts.booted}")

    def commit(self, reason: str) -> None:
        rauc_cmd.mark("good", "booted", run=self.run)
        with self.history.change():
            pending = self.history.pending
            version = (pending or {}).get("version") or self.version
            self.history.event(COMMITTED, version, reason,
                               replaced=(pending or {}).get("from_version"))
            self.history.set_pending(None)
        self.note(f"update {version} is running well and was kept")
        self.log(f"kept {version}: {reason}")
        self.write_status(phase=None, rolled_back=False)

    def roll_back(self, reason: str) -> None:
        """The trial failed: record why, mark this slot bad, restart into the previous one."""
        booted = self.facts().booted
        with self.history.change():
            pending = dict(self.history.pending or {"slot": booted, "version": self.version})
            pending["rollback_reason"] = reason
            self.history.set_pending(pending)
        self.log(f"rolling back {pending.get('version')}: {reason}")
        try:
            rauc_cmd.mark("bad", "booted", run=self.run)
        except rauc_cmd.RaucError as e:
            self.log(f"rauc mark-bad failed ({e}); restarting anyway")
        self.run(["systemctl", "reboot"], check=False)


def _is_refusal(message: str) -> bool:
    """RAUC failed before it touched a slot: the bundle itself was the problem. Mounting the
    bundle comes before RAUC selects and marks the target slots (and `verify_payload` has read
    all of it through dm-verity before the install starts)."""
    m = message.lower()
    return any(w in m for w in ("signature", "verif", "compatible", "keyring", "certificate",
                                "hash", "corrupt", "pre-check", "payload", "mounting bundle",
                                "device failed between"))


__all__ = ["COMMITTED", "IDLE", "INTERRUPTED", "ROLLED_BACK", "TRIAL", "WAITING", "UpdateDeferred",
           "UpdateRefused", "Updater"]
