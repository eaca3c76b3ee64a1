"""The update history is changed by separate processes at boot (the health gate, the USB, boot
partition and release-channel installers): each change is a locked read-modify-write, and one
bundle installs at a time.

Why: each process used to write back the whole record it had read when it started, so an
installer that refused a bundle during a trial wrote the trial's install record back over the
gate's commit. Here the updaters are real (real files, real locks, one `Updater` per process
as on the box); RAUC and the U-Boot environment are simulated (tests/update/simbox.py)."""

import json
import threading

import pytest

from firmware.update import sources
from firmware.update.rauc import RaucError
from firmware.update.status import History
from firmware.update.updater import UpdateRefused

from .simbox import SimBox, bundle, updater


def on_trial(tmp_path):
    """Booted into slot B on trial (fewer than 3 attempts left) with 0.2.0 pending there."""
    box = SimBox(tmp_path, "B", {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"})
    hist = History(str(tmp_path / "data/history.json"))
    with hist.change():
        hist.set_pending({"slot": "B", "version": "0.2.0", "key": "k2", "installed": True,
                          "from_version": "0.1.0"})
    return box


def runtime(tmp_path):
    return json.loads((tmp_path / "run/status.json").read_text())


def test_a_refusal_during_the_trial_keeps_the_gates_commit(tmp_path):
    box = on_trial(tmp_path)
    gate = updater(tmp_path, box, "0.2.0")
    installer = updater(tmp_path, box, "0.2.0")  # started beside the gate, read the trial record
    assert gate.settle()[0] == "trial"
    gate.commit("healthy for 120 s")
    lines = sources.install_from(installer, [str(tmp_path / "gone.raucb")], "USB stick",
                                 consume=False)
    assert lines == [f"{tmp_path}/gone.raucb: no such bundle file"]
    hist = History(str(tmp_path / "data/history.json"))
    assert hist.pending is None  # the trial's record did not come back
    assert [e["result"] for e in hist.data["events"]] == ["committed", "refused"]
    assert gate.settle()[0] == "idle"  # the next boot finds nothing to settle


def test_a_refusal_during_the_trial_leaves_the_box_showing_its_trial(tmp_path):
    box = on_trial(tmp_path)
    gate = updater(tmp_path, box, "0.2.0")
    assert gate.settle()[0] == "trial" and runtime(tmp_path)["phase"] == "trial"
    installer = updater(tmp_path, box, "0.2.0")
    sources.install_from(installer, [str(tmp_path / "gone.raucb")], "USB stick", consume=False)
    assert runtime(tmp_path)["phase"] == "trial"  # the LED still says "updating"
    with pytest.raises(UpdateRefused, match="still on trial"):
        installer.apply(bundle(tmp_path, "0.3.0"))
    assert History(str(tmp_path / "data/history.json")).pending["version"] == "0.2.0"


def test_two_installers_take_turns(tmp_path):
    """The USB stick and the release channel find a bundle at the same moment: the second
    waits until the first install has finished, then installs over it (the newest wins)."""
    box = SimBox(tmp_path, "A", {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
    usb, channel = updater(tmp_path, box, "0.1.0"), updater(tmp_path, box, "0.1.0")
    box.release.clear()
    results = {}

    def install(name, u, version):
        results[name] = u.apply(bundle(tmp_path, version), source=name, reboot=False)

    first = threading.Thread(target=install, args=("usb", usb, "0.2.0"))
    first.start()
    while box.log == []:
        first.join(0.01)  # until the first install is under way
    second = threading.Thread(target=install, args=("channel", channel, "0.3.0"))
    second.start()
    second.join(0.5)
    assert second.is_alive() and box.log == [("install-start", "homenode-0.2.0.raucb")]
    box.release.set()
    first.join(10)
    second.join(10)
    assert box.log == [("install-start", "homenode-0.2.0.raucb"),
                       ("install-end", "homenode-0.2.0.raucb"),
                       ("install-start", "homenode-0.3.0.raucb"),
                       ("install-end", "homenode-0.3.0.raucb")]
    assert results == {"usb": "installed 0.2.0 into slot B; it starts at the next restart",
                       "channel": "installed 0.3.0 into slot B; it starts at the next restart"}
    hist = History(str(tmp_path / "data/history.json"))
    assert hist.pending["version"] == "0.3.0" and hist.pending["installed"] is True
    assert [(e["result"], e["version"]) for e in hist.data["events"]] == [
        ("installed", "0.2.0"), ("installed", "0.3.0")]


def test_no_install_starts_while_the_box_restarts_into_another(tmp_path):
    """The boot partition's copy is gone before the restart is asked for, and a bundle found
    meanwhile (here on a USB stick, and one dropped on the boot partition) waits for the next
    boot: kept where it is, not declined."""
    box = SimBox(tmp_path, "A", {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
    boot = tmp_path / "bootfs"
    boot.mkdir()
    dropped = bundle(boot, "0.2.0")
    seen_at_reboot = []
    real_run = box.run

    def run(cmd, **kw):
        if cmd[0] == "systemctl":
            seen_at_reboot.append(sorted(p.name for p in boot.iterdir()))
        return real_run(cmd, **kw)

    box.run = run
    lines = sources.install_from(updater(tmp_path, box, "0.1.0"), [dropped], "boot partition",
                                 consume=True)
    assert lines == ["installed 0.2.0 into slot B; restarting into it"]
    assert seen_at_reboot == [[]] and box.log[-1] == ("systemctl", "reboot")
    assert box.payload_reads == ["homenode-0.2.0.raucb"]  # checked once, not again to install
    stick = tmp_path / "stick"
    stick.mkdir()
    late = bundle(boot, "0.3.0")
    for path, consume in ((bundle(stick, "0.3.0"), False), (late, True)):
        lines = sources.install_from(updater(tmp_path, box, "0.1.0"), [path], "x",
                                     consume=consume)
        assert lines == ["homenode-0.3.0.raucb: the box is restarting into 0.2.0; this bundle "
                         "waits until it has"]
    assert sorted(p.name for p in boot.iterdir()) == ["homenode-0.3.0.raucb"]  # not .refused
    hist = History(str(tmp_path / "data/history.json"))
    assert hist.pending["version"] == "0.2.0" and not hist.data.get("declined")
    assert [ln for ln in box.log if ln[0] == "install-start"] == [
        ("install-start", "homenode-0.2.0.raucb")]


def test_a_restart_that_kept_the_old_system_lets_installs_go_on(tmp_path):
    """Restarted, but still in slot A with B next (the restart never happened, or U-Boot was
    told to keep A once): the next boot drops the "restarting" mark, installs go on."""
    box = SimBox(tmp_path, "A", {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
    updater(tmp_path, box, "0.1.0").apply(bundle(tmp_path, "0.2.0"), source="USB stick")
    assert box.env["BOOT_ORDER"] == "B A"  # B is next, and A still runs after the restart
    assert updater(tmp_path, box, "0.1.0").settle()[0] == "waiting"
    stick = tmp_path / "stick"
    stick.mkdir()
    assert updater(tmp_path, box, "0.1.0").apply(bundle(stick, "0.3.0"), reboot=False) == (
        "installed 0.3.0 into slot B; it starts at the next restart")


def test_a_change_waits_for_the_one_in_progress_and_reads_it(tmp_path):
    path = str(tmp_path / "data/history.json")
    a, b = History(path), History(path)
    order = []
    with a.change():
        a.data["last_check"] = 5

        def other():
            with b.change():
                order.append(("b", b.data.get("last_check")))
                b.data["index_generated"] = 7

        t = threading.Thread(target=other)
        t.start()
        t.join(0.3)
        assert t.is_alive() and order == []  # held off by a's lock
        order.append("a ends")
    t.join(5)
    assert order == ["a ends", ("b", 5)]  # b read what a wrote
    assert json.loads(open(path).read()) == {"last_check": 5, "index_generated": 7}


def test_an_interrupted_change_writes_nothing(tmp_path):
    path = str(tmp_path / "data/history.json")
    h = History(path, clock=lambda: 1)
    with h.change():
        h.event("installed", "0.2.0", "into slot B")
    with pytest.raises(RaucError):
        with h.change():
            h.set_pending({"slot": "B"})
            raise RaucError("mark-bad failed")
    assert h.pending is None and History(path).pending is None
    assert [e["version"] for e in History(path).data["events"]] == ["0.2.0"]


def test_changes_outside_a_transaction_are_refused(tmp_path):
    h = History(str(tmp_path / "history.json"))
    for change in (lambda: h.set_pending(None), lambda: h.decline("k"),
                   lambda: h.event("refused", None, "x")):
        with pytest.raises(RuntimeError, match="inside `with change"):
            change()
