"""A/B system updates on the booted image (QEMU -M virt through Debian's u-boot-qemu, real RAUC,
the image's boot script and health gate).

Two guests run at once to use the waiting time (health windows, panics, reboots):
  the box      one card through the whole life of updates, test after test: v1 with its
               homenode.toml; bundles refused (unknown key, tampered) with nothing written;
               v1 -> v2 from the signed release channel, kept after its health window with the
               node id and every message; v3 whose node cannot start, rolled back by the gate
               (delivered on a USB stick); v4 that never reaches userspace, brought back by
               U-Boot's counter (installed with `homenode update apply`).
  the cutter   power cuts (SIGKILL of QEMU, cache=none) at five points during an install and
               its trial boot, with messages stored all along; runs in a background thread
               from the start of the module, its test asserts what it recorded.
The second versions are the build's own slot images with a changed version marker (and a
broken node unit, or no /sbin/init), signed with the TEST key: no second image build.
"""

import json
import os
import re
import subprocess
import threading
import time
import traceback
from pathlib import Path

import pytest

from firmware.identity import Identity
from firmware.update import layout
from image import keys
from qemu.guest import Guest
from qemu.harness import fat_read, fat_write, partitions
from tests.image import boxes

pytestmark = [pytest.mark.qemu, pytest.mark.slow]
CARD_MIB = 4096
MiB = 1 << 20
LIFETIME_S = 5400  # a lab guest lives through several tests (QEMU is killed after this)


class Lab:
    """Shared state of the module: bundles (made in a thread), the box, the cutter thread."""

    def __init__(self, image, ssh_key, served, tmp: Path, boot_times):
        self.image, self.served, self.tmp, self.boot_times = image, served, tmp, boot_times
        self.key, self.pub = ssh_key
        self.bundles: dict = {}
        self.bundles_ready = threading.Event()
        self.bundle_error: str | None = None
        self.cutter: dict = {"events": []}
        self.cutter_done = threading.Event()
        self.machines = []
        self.box: boxes.Box | None = None
        self.box_error: str | None = None
        self.user = Identity.generate()
        self.box_writer = boxes.Writer(self.user)

    # -- bundles ------------------------------------------------------------------------------

    def _make_bundles(self):
        try:
            other = self.tmp / "other-key"
            keys.make_key(other / "k.pem", other / "c.pem", "/CN=not the homenode key")
            made = boxes.make_bundles(self.image, self.served.root,
                                      keys.SigningKey(other / "c.pem", other / "k.pem", True))
            self.bundles.update(made)
        except BaseException:  # noqa: BLE001 - reported by the tests that need them
            self.bundle_error = traceback.format_exc()
        finally:
            self.bundles_ready.set()

    def bundle(self, name: str) -> Path:
        assert self.bundles_ready.wait(1800), "bundles not made within 30 min"
        assert self.bundle_error is None, self.bundle_error
        return self.bundles[name]

    # -- machines -----------------------------------------------------------------------------

    def machine(self, name: str, toml: str) -> boxes.Box:
        m = Guest.machine(self.image.raw, self.tmp / name, CARD_MIB, max_runtime=LIFETIME_S)
        self.machines.append(m)
        fat_write(m.disk, "homenode.toml", toml.encode(), self.tmp)
        return boxes.Box(Guest(m), self.key)

    def start(self):
        threading.Thread(target=self._make_bundles, daemon=True).start()
        threading.Thread(target=self._cutter, daemon=True).start()

    def close(self):
        for m in self.machines:
            m.kill()

    def record(self, name, box, extra=None):
        self.boot_times.append({"test": name, "boot": box.m.boots, **box.m.seen,
                                **(extra or {})})

    # -- the box ------------------------------------------------------------------------------

    def get_box(self) -> boxes.Box:
        if self.box is None and self.box_error is None:
            try:
                box = self.machine("box", boxes.box_toml(
                    self.pub, hostname="kitchen-node",
                    index_url=self.served.guest_url("index.json")))
                box.g.boot()
                box.wait_ssh()
                self.record("box-v1", box)
                self.box = box
            except BaseException:
                self.box_error = traceback.format_exc()
        if self.box_error:
            pytest.fail("the box did not boot:\n" + self.box_error)
        return self.box

    # -- the cutter (background) --------------------------------------------------------------

    def _cutter(self):
        try:
            power_cut_scenario(self)
        except BaseException:  # noqa: BLE001 - asserted in its test
            self.cutter["error"] = traceback.format_exc()
        finally:
            self.cutter_done.set()


@pytest.fixture(scope="module")
def lab(sd_image, ssh_key, served, tmp_path_factory, boot_times):
    lab = Lab(sd_image, ssh_key, served, tmp_path_factory.mktemp("update"), boot_times)
    lab.start()
    yield lab
    lab.cutter_done.wait(60)
    lab.close()


def slot_span(disk: Path, number: int) -> tuple[int, int]:
    p = partitions(disk)[number - 1]
    return p["start"] * 512, p["size"] * 512


def wait_update(box: boxes.Box, pred, timeout: float, what: str) -> dict:
    return box.m.wait_until(lambda: (lambda u: u if pred(u) else None)(box.update_info()),
                            timeout, what, interval=3)


# --- the box, test by test ------------------------------------------------------------------

def test_box_boots_v1_with_its_config(lab):
    """First boot with homenode.toml: hostname (also as hostname.local by mDNS), SSH with the key
    only, settings, the hardened unit, Python 3.13 with lgpio, persistent journal on /data,
    the update status of a fresh card (slot A committed, B empty)."""
    box = lab.get_box()
    st = box.g.status()
    assert st["device"]["bandwidth"]["cap_bytes"] == 7_000_000_000
    assert st["update"]["slot"] == "A" and st["update"]["version"] == boxes.V1
    assert st["update"]["other_slot"]["state"] == "bad"  # empty until an update fills it
    out = box.sh("hostname; cat /etc/homenode/node.toml /etc/homenode/update.toml; "
                 "systemctl is-active homenode.service avahi-daemon.service; "
                 "getent hosts kitchen-node.local; "
                 "systemd-analyze security homenode.service --no-pager | tail -n 1; "
                 "ls /var/log/journal; findmnt -n -o SOURCE /var/log/journal; "
                 "/opt/homenode/bin/python3 -c 'import sys, lgpio, nacl, cryptography, cbor2, "
                 "psutil, gpiozero, trio; print(\"python\", sys.version.split()[0], "
                 "trio.__version__)'; . /etc/os-release; echo $VERSION_CODENAME; "
                 "homenode update status")
    lines = out.splitlines()
    assert lines[0] == "kitchen-node"
    assert "monthly_cap_gb = 7" in out and "health_window_s = 20" in out
    assert lines.count("active") >= 2
    assert re.search(r"^\S+\s+kitchen-node\.local", out, re.M), out  # nss-mdns + avahi
    exposure = next(ln for ln in lines if "Overall exposure level" in ln)
    assert float(exposure.split(": ")[1].split()[0]) <= 2.0, exposure
    assert re.search(r"^[0-9a-f]{32}$", out, re.M)  # the journal's machine-id directory
    assert "/dev/vda7[/system/journal]" in out
    assert re.search(r"^python 3\.13\.\d+ 0\.35\.0$", out, re.M), out
    assert "trixie" in lines
    assert "in slot A (switched by uboot)" in out
    timing = box.sh("systemd-analyze time; systemd-analyze blame --no-pager | head -n 12",
                    check=False)
    lab.record("box-config", box, {"exposure": exposure.split(": ", 1)[-1],
                                   "systemd_analyze": timing.splitlines()})
    # the SSH host key lives on the data partition (the same key after every update)
    assert box.sh("ls /data/system/ssh").split() == ["ssh_host_ed25519_key",
                                                     "ssh_host_ed25519_key.pub"]


def test_bundles_with_an_unknown_key_or_tampered_are_refused_writing_nothing(lab):
    box = lab.get_box()
    env_before = box.env()
    assert env_before == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    b_spans = [slot_span(box.m.disk, n) for n in (layout.SLOTS[1].boot_part,
                                                  layout.SLOTS[1].root_part)]
    for start, size in b_spans:
        assert boxes.written_ranges(box.m.disk, start, size) == []
    results = {}
    for name in ("unknown", "tampered"):
        path = lab.bundle(name)
        box.fetch(lab.served.guest_url(path.name), f"/data/system/update/{path.name}")
        r = box.m.ssh(box.key, f"homenode update apply /data/system/update/{path.name}",
                      timeout=600)
        results[name] = r
        box.sh(f"rm /data/system/update/{path.name}")
    assert results["unknown"].returncode == 3, results["unknown"]
    assert "signature" in results["unknown"].stderr.lower(), results["unknown"].stderr
    assert results["tampered"].returncode != 0, results["tampered"]
    # nothing written to any slot: B's partitions hold no written block, U-Boot state unchanged
    for start, size in b_spans:
        assert boxes.written_ranges(box.m.disk, start, size) == [], "slot B was written"
    assert box.env() == env_before
    info = box.update_info()
    assert info["slot"] == "A" and info["version"] == boxes.V1
    assert info["last_result"] == "refused"
    assert box.g.status()["state"] == "serving"


def test_v1_to_v2_from_the_release_channel_keeps_identity_and_messages(lab):
    box = lab.get_box()
    node_id = box.g.node_id
    lab.box_writer.run_once(box.m.ports["node"], bytes.fromhex(node_id), count=40)
    assert len(lab.box_writer.acked) == 40, lab.box_writer.errors
    v2 = lab.bundle("v2")
    from image import release

    release.make_index(lab.served.root / "index.json", [v2], {v2}, lab.image.signing.key)
    mark = box.m.mark()
    t0 = time.monotonic()
    installer = threading.Thread(target=lambda: box.m.ssh(
        box.key, "homenode update check --now", timeout=900), daemon=True)
    installer.start()
    seen_updating = box.m.wait_until(
        lambda: box.g.status().get("health") == "updating", 600,
        "the LED state 'updating' while the bundle installs", interval=2)
    status = box.g.wait_up(mark)
    install_s = round(time.monotonic() - t0, 1)
    assert box.g.slot == "B"
    assert status["update"]["phase"] == "trial" and status["health"] == "updating"
    info = wait_update(box, lambda u: u.get("last_result") == "committed", 400,
                       "the gate keeping v2 after its health window")
    reboot_to_commit = round(time.monotonic() - t0 - install_s, 1)
    # the LED leaves "updating" at the node's next health round (hal poll_interval)
    st = box.m.wait_until(lambda: (lambda s: s if s["health"] != "updating" else None)(
        box.g.status()), 60, "the LED leaving 'updating' after the commit", interval=2)
    assert st["node_id"] == node_id
    assert info["slot"] == "B" and info["version"] == "0.1.1" and not info["rolled_back"]
    assert lab.box_writer.missing(box.m.ports["node"], bytes.fromhex(node_id)) == []
    assert box.env()["BOOT_B_LEFT"] == "3"  # committed: U-Boot will not write again
    assert b"was kept" in fat_read(box.m.disk, "homenode-update.txt")
    kept = json.loads(box.sh("cat /data/system/update/history.json"))["events"][-1]
    assert (kept["result"], kept["version"]) == ("committed", "0.1.1")
    assert kept["replaced"] == boxes.V1
    lab.record("box-v2", box, {"install_s": install_s, "reboot_to_committed_s":
                               reboot_to_commit, "saw_updating_led": bool(seen_updating)})


def test_a_v2_whose_node_cannot_start_rolls_back_by_itself_and_says_so(lab):
    box = lab.get_box()
    node_id = box.g.node_id
    v3 = lab.bundle("v3")
    stick = lab.tmp / "stick.img"
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "UPDATE", "-C", str(stick),
                    str((v3.stat().st_size // MiB + 64) * 1024)], check=True, capture_output=True)
    subprocess.run(["mcopy", "-i", str(stick), str(v3), "::/"], check=True,
                   env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    mark = box.m.mark()
    t0 = time.monotonic()
    box.m.plug_usb(stick)
    box.m.wait_console(r"homenode-update: installing 0\.1\.2 \(USB stick\)", 300, start=mark)
    box.m.wait_console(r"homenode-uboot: starting slot A", 900, start=mark)
    box.m.wait_console(r"homenode-update: rolling back 0\.1\.2", 600, start=mark)
    back = box.m.mark()
    status = box.g.wait_up(back)
    rollback_s = round(time.monotonic() - t0, 1)
    assert box.g.slot == "B"
    info = status["update"]
    assert info["rolled_back"] and info["last_result"] == "rolled_back"
    assert info["last_version"] == "0.1.2" and "node" in info["last_reason"]
    assert info["version"] == "0.1.1" and info["slot"] == "B"
    assert status["node_id"] == node_id
    assert lab.box_writer.missing(box.m.ports["node"], bytes.fromhex(node_id)) == []
    assert b"rolled back" in fat_read(box.m.disk, "homenode-update.txt")
    # the gate's own line, on the console (systemd writes the unit's output there directly;
    # the journal of this boot did not always hold it)
    assert "ROLLED BACK 0.1.2" in box.m.console_text()
    lab.record("box-v3-rollback", box, {"install_to_back_s": rollback_s})


def test_a_v2_that_never_reaches_userspace_is_brought_back_by_the_boot_counter(lab):
    box = lab.get_box()
    node_id = box.g.node_id
    v4 = lab.bundle("v4")
    box.fetch(lab.served.guest_url(v4.name), f"/data/system/update/{v4.name}")
    mark = box.m.mark()
    t0 = time.monotonic()
    box.m.ssh(box.key, f"homenode update apply /data/system/update/{v4.name}", timeout=900)
    status = box.g.wait_up(box.m.wait_console(r"homenode-uboot: starting slot B", 900,
                                              start=mark).start())
    back_s = round(time.monotonic() - t0, 1)
    started = box.g.slots_started(mark)
    assert started == ["A", "A", "B"], started  # two tries of v4, then the committed v2
    assert len(re.findall(r"No init found|Kernel panic|Rebooting automatically",
                          box.m.console_text()[mark:])) >= 2
    info = status["update"]
    assert info["rolled_back"] and info["last_version"] == "0.1.3"
    assert "did not prove itself" in info["last_reason"]
    assert info["version"] == "0.1.1" and status["node_id"] == node_id
    assert lab.box_writer.missing(box.m.ports["node"], bytes.fromhex(node_id)) == []
    env = box.env()
    assert env["BOOT_A_LEFT"] == "0" and env["BOOT_B_LEFT"] == "3"
    lab.record("box-v4-counter", box, {"apply_to_back_s": back_s,
                                       "poweroff_s": round(box.m.powerdown(), 1)})
    for n in (layout.SLOTS[1].root_part, layout.DATA_PART):
        part = lab.tmp / f"box-p{n}.ext4"
        from qemu.harness import extract_partition
        extract_partition(box.m.disk, n, part)
        r = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
        part.unlink()
        assert r.returncode == 0, r.stdout + r.stderr


# --- power cuts (the cutter) ------------------------------------------------------------------

CUT_POINTS = ("install, early", "install, late", "installed, before the restart",
              "trial boot, kernel starting", "trial boot, node running before the commit")


def power_cut_scenario(lab: Lab) -> None:
    """Runs in a thread from module start; fills lab.cutter."""
    rec = lab.cutter
    small = lab.tmp / "fat-drop-unknown.raucb"
    _small_unknown_bundle(lab, small)
    # a long health window: the cut "before the commit" must not race the gate
    box = lab.machine("cutter", boxes.box_toml(lab.pub, hostname="cutter", window_s=900,
                                               trial_timeout_s=1800))
    fat_write(box.m.disk, "homenode-test.raucb", small.read_bytes(), lab.tmp)
    writer = boxes.Writer(Identity.generate())
    box.g.boot()
    box.wait_ssh()
    node_id = bytes.fromhex(box.g.node_id)
    # a bundle copied onto the boot partition from a PC: this one is signed by a stranger
    box.sh("systemctl start homenode-update-check.service", timeout=600)
    rec["fat_drop"] = {"files": box.sh("ls /boot/firmware"),
                       "note": box.sh("cat /boot/firmware/homenode-update.txt"),
                       "env": box.env()}
    v2 = lab.bundle("v2")
    box.fetch(lab.served.guest_url(v2.name), "/data/system/update/v2.raucb")

    def writing():
        return writer.background(box.m.ports["node"], node_id)

    def after_cut(point: str, expect_slot: str):
        box.m.kill()
        box.g.boot()
        missing = writer.missing(box.m.ports["node"], bytes.fromhex(box.g.node_id))
        st = box.g.status()
        rec["events"].append({"point": point, "slot": box.g.slot, "expect_slot": expect_slot,
                              "state": st["state"], "node_id": st["node_id"],
                              "missing": missing, "acked": len(writer.acked),
                              "update": st.get("update")})
        lab.record(f"cut: {point}", box, {"acked": len(writer.acked)})

    def install_and_cut(point: str, at_progress: int):
        t, stop = writing()
        ended = {}

        def apply():
            ended["r"] = box.m.ssh(
                box.key, "homenode update apply --no-reboot /data/system/update/v2.raucb",
                timeout=900)

        threading.Thread(target=apply, daemon=True).start()
        seen = box.m.wait_until(
            lambda: "r" in ended or (box.update_info().get("progress") or -1) >= at_progress,
            600, f"install progress {at_progress}%", interval=1)
        if "r" in ended:  # the install ended (or was refused) before the cut point
            r = ended["r"]
            raise AssertionError(f"`homenode update apply` ended before {at_progress}% "
                                 f"(rc {r.returncode}, saw {seen!r}): {r.stdout}{r.stderr}\n"
                                 f"update status: {box.update_info()}\n" + box.m.tail(40))
        box.m.power_cut()
        stop.set()
        after_cut(point, "A")

    install_and_cut(CUT_POINTS[0], 25)
    install_and_cut(CUT_POINTS[1], 75)
    # installed completely, cut before the restart: U-Boot must try the new slot next
    t, stop = writing()
    r = box.m.ssh(box.key, "homenode update apply --no-reboot /data/system/update/v2.raucb",
                  timeout=900)
    rec["apply"] = r.stdout + r.stderr
    box.m.power_cut()
    stop.set()
    box.m.kill()
    box.m.start()
    box.m.wait_console(r"homenode-uboot: starting slot B", 300)
    box.m.wait_console(r"Run /init as init process", 300)
    box.m.power_cut()  # the trial boot, before userspace
    rec["events"].append({"point": CUT_POINTS[2], "slot": "B", "expect_slot": "B",
                          "state": "cut again at kernel start", "missing": [], "acked": 0,
                          "update": None})
    after_cut(CUT_POINTS[3], "B")  # second (last) attempt of B: boots, serving on trial
    rec["trial_phase"] = box.update_info().get("phase")
    t, stop = writing()
    time.sleep(2)
    box.m.power_cut()  # node running on trial, window (900 s) not over: not committed
    stop.set()
    after_cut(CUT_POINTS[4], "A")  # B has no attempts left: the committed v1 comes back
    box.m.powerdown()
    for n in (layout.SLOTS[0].root_part, layout.DATA_PART):
        from qemu.harness import extract_partition
        part = extract_partition(box.m.disk, n, lab.tmp / f"cutter-p{n}.ext4")
        r = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
        part.unlink()
        rec[f"fsck_p{n}"] = (r.returncode, r.stdout[-500:])
    rec["writer_errors"] = writer.errors[-3:]


def _small_unknown_bundle(lab: Lab, out: Path) -> None:
    """A tiny bundle signed by a stranger's key (the boot partition has no room to waste)."""
    from image import bundle
    from image.assemble import make_vfat

    d = lab.tmp / "small"
    (d / "tree").mkdir(parents=True)
    (d / "tree/payload").write_bytes(os.urandom(64 << 10))
    subprocess.run(["mkfs.ext4", "-q", "-d", str(d / "tree"), str(d / "root.ext4"), "8M"],
                   check=True)
    make_vfat(d / "tree", d / "boot.vfat", 40, "HNBOOT", 1)
    keys.make_key(d / "k.pem", d / "c.pem", "/CN=a stranger")
    bundle.make_bundle(d / "boot.vfat", d / "root.ext4", out, "9.9.9", "x",
                       keys.SigningKey(d / "c.pem", d / "k.pem", True), d / "w", zstd_level=3)


def test_power_cuts_during_install_and_trial_always_come_back_healthy(lab):
    assert lab.cutter_done.wait(3600), "the power-cut scenario did not finish within an hour"
    rec = lab.cutter
    assert "error" not in rec, rec["error"]
    drop = rec["fat_drop"]
    assert "homenode-test.raucb.refused" in drop["files"], drop
    assert "refused" in drop["note"] and "signature" in drop["note"].lower(), drop
    assert drop["env"] == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    points = [e["point"] for e in rec["events"]]
    assert points == list(CUT_POINTS), points
    for e in rec["events"]:
        assert e["slot"] == e["expect_slot"], e
        if e["update"] is not None:
            assert e["state"] == "serving" and e["missing"] == [], e
    assert rec["trial_phase"] == "trial"
    last = rec["events"][-1]["update"]
    assert last["slot"] == "A" and last["rolled_back"], last
    assert rec["events"][-1]["acked"] > 0
    for n in (layout.SLOTS[0].root_part, layout.DATA_PART):
        assert rec[f"fsck_p{n}"][0] == 0, rec[f"fsck_p{n}"]
