"""`homenode update gate` tells systemd it is ready only once the last install is settled.

Why it matters: the units that install bundles are ordered after the gate's unit and read the
update history; on a QEMU box a USB stick left in the port installed a bundle that had just
been rolled back, because its unit started before the rollback was recorded (now the gate unit
is Type=notify). Here: a real notification socket; the updater is a recorder, because a real
settle needs a booted A/B box (tests/image/test_update.py boots one)."""

import socket
from pathlib import Path

import pytest

from firmware.sdnotify import Notifier
from firmware.update.cli import EXIT_FAIL, EXIT_OK, run_gate
from firmware.update.gate import IDLE, ROLLED_BACK, TRIAL

UNITS = Path(__file__).resolve().parents[2] / "image" / "overlay" / "etc" / "systemd" / "system"


@pytest.fixture
def notify(tmp_path):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.setblocking(False)
    yield path, s
    s.close()


def received(s) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(1000))
        except BlockingIOError:
            return out


class Recorder:
    """Stands for the Updater: says what `settle` found and notes what was asked of it."""

    def __init__(self, situation, sock, fail=None):
        self.situation, self.sock, self.fail = situation, sock, fail
        self.calls = []

    def settle(self):
        assert received(self.sock) == [], "READY=1 before the last install was settled"
        self.calls.append("settle")
        if self.fail:
            raise self.fail
        return self.situation, ""

    def write_status(self):
        self.calls.append("write_status")


@pytest.mark.parametrize("situation", [IDLE, ROLLED_BACK])
def test_ready_once_settled_then_done(notify, situation):
    path, s = notify
    u = Recorder(situation, s)
    watched = []
    assert run_gate(u, Notifier(path, watchdog_usec=0), watched.append) == EXIT_OK
    assert u.calls == ["settle"] and watched == []
    assert received(s) == [f"READY=1\nSTATUS=last update settled: {situation}".encode()]


@pytest.mark.parametrize("verdict, code", [("commit", EXIT_OK), ("rollback", EXIT_FAIL)])
def test_a_trial_is_watched_after_ready(notify, verdict, code):
    path, s = notify
    u = Recorder(TRIAL, s)
    seen = []

    def watch(updater):
        seen.append(received(s))  # what systemd had been told when the watch began
        return verdict

    assert run_gate(u, Notifier(path, watchdog_usec=0), watch) == code
    assert seen == [[b"READY=1\nSTATUS=last update settled: trial"]]


def test_a_settle_that_fails_never_says_ready(notify):
    path, s = notify
    u = Recorder(IDLE, s, fail=OSError("rauc status: no such file"))
    assert run_gate(u, Notifier(path, watchdog_usec=0), lambda _: "commit") == EXIT_FAIL
    assert u.calls == ["settle", "write_status"] and received(s) == []


def test_bundle_installers_wait_for_the_settled_gate():
    gate = (UNITS / "homenode-update-gate.service").read_text()
    assert "\nType=notify\n" in gate  # started = READY=1 = settled
    for unit in ("homenode-update-usb@.service", "homenode-update-check.service"):
        after = [line for line in (UNITS / unit).read_text().splitlines()
                 if line.startswith("After=")]
        assert any("homenode-update-gate.service" in line for line in after), unit
