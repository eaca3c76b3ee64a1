"""A simulated A/B box for the updater's unit tests: `run` / `run_lines` answer the commands
the updater gives (fw_printenv, rauc info / mount / install / status mark-good, findmnt, umount,
systemctl) from a U-Boot environment held in memory and bundle files the test writes. The real
ones need a booted A/B system: tests/image/test_update.py boots one in QEMU."""

import json
import subprocess
import threading

from firmware.update.status import History
from firmware.update.updater import Updater


class SimBox:
    """`run` / `run_lines` for the updater: the U-Boot attempt counters RAUC and the bootloader
    keep, `rauc info` / `rauc mount` of the bundle files the test writes, `rauc install`."""

    def __init__(self, tmp_path, booted, env):
        self.tmp, self.booted, self.env = tmp_path, booted, dict(env)
        self.log = []  # ("install-start" | "install-end", bundle), ("systemctl", its arguments)
        self.payload_reads = []  # bundle names, one per `rauc mount` to read a payload through
        self.release = threading.Event()  # an install finishes once this is set
        self.release.set()
        self.install_status = 0  # what `rauc install` exits with

    def run(self, cmd, **kw):
        def done(rc=0, out="", err=""):
            return subprocess.CompletedProcess(cmd, rc, out, err)

        if cmd[0] == "fw_printenv":
            return done(out="".join(f"{k}={self.env[k]}\n" for k in cmd[1:] if k in self.env))
        if cmd[:2] == ["rauc", "info"]:
            doc = json.loads(open(cmd[-1]).read())
            if doc.get("refuse"):
                return done(1, err=f"LastError: {doc['refuse']}")
            return done(out=json.dumps(dict(doc, compatible="homenode-rpi-arm64")))
        if cmd[:2] == ["rauc", "mount"]:  # before the updater reads the payload through
            self.payload_reads.append(cmd[-1].rsplit("/", 1)[-1])
            return done()
        if cmd[0] == "findmnt":
            return done(out=str(self.tmp / "payload") + "\n")
        if cmd[0] == "umount":
            return done()
        if cmd[0] == "systemctl":
            self.log.append(("systemctl", " ".join(cmd[1:])))
            return done()
        if cmd[:3] == ["rauc", "status", "mark-good"]:
            self.env[f"BOOT_{self.booted}_LEFT"] = "3"
            return done()
        return done(1, err=f"LastError: {' '.join(cmd)} not simulated")

    def run_lines(self, cmd):
        name = cmd[-1].rsplit("/", 1)[-1]
        self.log.append(("install-start", name))
        yield "  0% Installing"
        assert self.release.wait(10), "the test never let the install finish"
        if self.install_status:
            yield "LastError: Failed writing slot rootfs.1: No space left on device"
            self.log.append(("install-failed", name))
            return self.install_status
        yield "100% Installing done."
        other = "B" if self.booted == "A" else "A"
        self.env["BOOT_ORDER"] = f"{other} {self.booted}"  # RAUC: the new slot boots next
        self.log.append(("install-end", name))
        return 0


def updater(tmp_path, box, version, now=1_800_000_000):
    """An Updater over `box`, as one process on it would make it (its own History)."""
    (tmp_path / "root/etc/homenode").mkdir(parents=True, exist_ok=True)
    (tmp_path / "root/etc/homenode/release.json").write_text(json.dumps({"version": version}))
    (tmp_path / "payload").write_bytes(b"verity-checked payload")
    return Updater(history=History(str(tmp_path / "data/history.json"), clock=lambda: now),
                   run=box.run, run_lines=box.run_lines,
                   runtime_status=str(tmp_path / "run/status.json"),
                   cmdline=f"rauc.slot={box.booted} homenode.boot=uboot",
                   release_root=str(tmp_path / "root"), note_path=None, log=lambda m: None,
                   clock=lambda: now, work_dir=str(tmp_path / "work"))


def bundle(tmp_path, version, refuse=None):
    """A bundle file the simulated `rauc info` reads (`refuse`: the error it reports)."""
    path = tmp_path / f"homenode-{version}.raucb"
    path.write_text(json.dumps({"version": version, "build": f"b{version}", "refuse": refuse,
                                "images": [{"rootfs": {"checksum": version}}]}))
    return str(path)
