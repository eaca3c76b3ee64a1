"""The shell safety net behind the health gate (image/overlay/usr/lib/homenode/trial-deadline):
a slot still on trial 30 minutes after boot gives up its trial and the box restarts. Run with
/bin/sh, with fw_printenv/fw_setenv/systemctl on PATH recording what they are asked."""

import struct
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "image/overlay/usr/lib/homenode/trial-deadline"


def run(tmp_path, cmdline, left=None, tryboot=None):
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    for name, body in (("fw_printenv", f"echo fw_printenv \"$@\" >> {calls}; "
                                       + (f"echo {left}" if left is not None else "exit 1")),
                       ("fw_setenv", f"echo fw_setenv \"$@\" >> {calls}"),
                       ("systemctl", f"echo systemctl \"$@\" >> {calls}")):
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    dt = tmp_path / "dt/chosen/bootloader"
    dt.mkdir(parents=True, exist_ok=True)
    if tryboot is not None:
        (dt / "tryboot").write_bytes(struct.pack(">I", tryboot))
    r = subprocess.run(["/bin/sh", str(SCRIPT)], capture_output=True, text=True, timeout=10,
                       env={"PATH": f"{bin_}:/usr/bin:/bin", "CMDLINE": str(tmp_path / "cmdline"),
                            "DEVICE_TREE": str(tmp_path / "dt")})
    assert r.returncode == 0, r.stderr
    return calls.read_text().splitlines() if calls.exists() else []


UBOOT_B = "console=ttyAMA0 root=PARTUUID=x-06 rw rauc.slot=B homenode.boot=uboot panic=10"
TRYBOOT_B = "console=tty1 root=PARTUUID=x-06 rw rauc.slot=B homenode.boot=tryboot"


@pytest.mark.parametrize("left", ["1", "2", "0"])
def test_uboot_trial_gives_up_and_restarts(tmp_path, left):
    calls = run(tmp_path, UBOOT_B, left=left)
    assert calls == ["fw_printenv -n BOOT_B_LEFT", "fw_setenv BOOT_B_LEFT 0", "systemctl reboot"]


def test_committed_uboot_slot_is_left_alone(tmp_path):
    assert run(tmp_path, UBOOT_B, left="3") == ["fw_printenv -n BOOT_B_LEFT"]


def test_tryboot_trial_restarts_committed_does_not(tmp_path):
    assert run(tmp_path, TRYBOOT_B, tryboot=1) == ["systemctl reboot"]
    assert run(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path,
               TRYBOOT_B, tryboot=0) == []


def test_not_an_ab_boot(tmp_path):
    assert run(tmp_path, "root=/dev/sda1 rw") == []
