"""The node's unit acts on `homenode run`'s exit statuses (firmware/exit_status.py): the
unprivileged node asks, the privileged post-stop hook powers off, systemd restarts after a reset."""

import os
import subprocess
from pathlib import Path

import pytest

from firmware.exit_status import EXIT_POWEROFF, EXIT_RESTART

OVERLAY = Path(__file__).resolve().parents[2] / "image" / "overlay"
UNIT = OVERLAY / "etc/systemd/system/homenode.service"
HOOK = OVERLAY / "usr/lib/homenode/after-stop"


def unit_settings():
    pairs = []
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_unit_restarts_after_reset_and_powers_off_through_the_hook():
    settings = unit_settings()
    assert ("RestartForceExitStatus", str(EXIT_RESTART)) in settings
    assert ("SuccessExitStatus", str(EXIT_POWEROFF)) in settings  # not a failure: no restart
    assert ("ExecStopPost", "+/usr/lib/homenode/after-stop") in settings  # '+': runs as root
    assert ("User", "homenode") in settings
    assert os.access(HOOK, os.X_OK)


@pytest.mark.parametrize("exit_code,status,powers_off", [
    ("exited", str(EXIT_POWEROFF), True),
    ("exited", "0", False),
    ("exited", str(EXIT_RESTART), False),
    ("killed", str(EXIT_POWEROFF), False),  # a signal numbered 76 is not a request
    ("", "", False),
])
def test_post_stop_hook_powers_off_only_when_asked(tmp_path, exit_code, status, powers_off):
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "EXIT_CODE": exit_code, "EXIT_STATUS": status}
    r = subprocess.run(["/bin/sh", str(HOOK)], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert (calls.read_text() if calls.exists() else "") == (
        "--no-block poweroff\n" if powers_off else "")
