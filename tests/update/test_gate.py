"""The health gate and the boot-time verdict (firmware/update/gate.py): pure decisions."""

import pytest

from firmware.update.gate import (
    COMMITTED,
    IDLE,
    INTERRUPTED,
    ROLLED_BACK,
    TRIAL,
    WAITING,
    BootFacts,
    HealthGate,
    Sample,
    classify,
)

PENDING_B = {"slot": "B", "version": "0.2.0", "tried": False, "installed": True}


def facts(booted="A", trial=False, primary="A", bad=(), mode="uboot"):
    return BootFacts(booted=booted, mode=mode, trial=trial, primary=primary, bad=frozenset(bad))


@pytest.mark.parametrize("f, pending, expect", [
    (facts(), None, IDLE),
    (facts(trial=True), None, TRIAL),  # U-Boot state lost: the running slot is on trial again
    (facts(booted="B", trial=True, primary="B"), PENDING_B, TRIAL),
    (facts(booted="B", trial=False, primary="B"), PENDING_B, COMMITTED),
    (facts(primary="B"), PENDING_B, WAITING),  # installed with --no-reboot / cut before reboot
    (facts(bad=["B"]), PENDING_B, ROLLED_BACK),  # U-Boot ran out of attempts on B
    (facts(mode="tryboot"), dict(PENDING_B, tried=True), ROLLED_BACK),  # tryboot one-shot spent
    (facts(mode="tryboot", primary="B"), PENDING_B, WAITING),
    (facts(primary="A"), PENDING_B, ROLLED_BACK),
    (facts(), dict(PENDING_B, rollback_reason="node failed"), ROLLED_BACK),
    # power cut while RAUC wrote slot B (it had marked B bad first)
    (facts(bad=["B"]), dict(PENDING_B, installed=False), INTERRUPTED),
    # ... or right after RAUC made B primary, before the updater noted it
    (facts(primary="B"), dict(PENDING_B, installed=False), WAITING),
    (facts(booted="B", trial=True, primary="B"), dict(PENDING_B, installed=False), TRIAL),
])
def test_classify(f, pending, expect):
    situation, reason = classify(f, pending)
    assert situation == expect
    if expect in (ROLLED_BACK, COMMITTED, WAITING):
        assert reason


def test_rollback_reason_from_the_gate_is_reported_verbatim():
    _, reason = classify(facts(), dict(PENDING_B, rollback_reason="the node restarted"))
    assert reason == "the node restarted"


def test_never_reached_userspace_says_so():
    _, reason = classify(facts(bad=["B"]), PENDING_B)
    assert "0.2.0" in reason and "did not prove itself" in reason


def ok(at, restarts=0, health="updating"):
    return Sample(at=at, ready=True, failed=False, restarts=restarts, serving=True,
                  health=health)


def down(at, restarts=0, failed=False):
    return Sample(at=at, ready=False, failed=failed, restarts=restarts, serving=False,
                  health="unknown", problem="homenode.service is activating")


def test_commits_after_a_whole_healthy_window():
    g = HealthGate(window_s=30, deadline_s=300)
    assert g.observe(down(0)).action == "wait"
    assert g.observe(ok(10)).action == "wait"  # window starts here
    assert g.observe(ok(39)).action == "wait"
    v = g.observe(ok(40))
    assert v.action == "commit" and "30 s" in v.reason
    assert g.observe(down(41)).action == "commit"  # decided once


def test_a_restart_starts_the_window_again():
    g = HealthGate(window_s=30, deadline_s=300)
    g.observe(ok(0))
    assert g.observe(ok(25, restarts=1)).action == "wait"  # restarted in between
    assert g.observe(ok(50, restarts=1)).action == "wait"  # the window starts again here
    assert g.observe(ok(79, restarts=1)).action == "wait"
    assert g.observe(ok(80, restarts=1)).action == "commit"


def test_fatal_state_is_not_healthy():
    g = HealthGate(window_s=10, deadline_s=60)
    for t in range(0, 60, 5):
        assert g.observe(ok(t, health="fatal_error")).action == "wait"
    v = g.observe(ok(60, health="fatal_error"))
    assert v.action == "rollback" and "fatal_error" in v.reason


def test_rollback_at_the_deadline_names_the_last_problem():
    g = HealthGate(window_s=30, deadline_s=120)
    for t in range(0, 120, 10):
        assert g.observe(down(t)).action == "wait"
    v = g.observe(down(120))
    assert v.action == "rollback"
    assert "within 120 s" in v.reason and "activating" in v.reason


def test_systemd_giving_up_rolls_back_at_once():
    g = HealthGate(window_s=30, deadline_s=900)
    g.observe(down(0, restarts=3))
    v = g.observe(down(40, restarts=10, failed=True))
    assert v.action == "rollback" and "gave up" in v.reason


def test_healthy_streak_that_ends_before_the_window_does_not_commit():
    g = HealthGate(window_s=30, deadline_s=100)
    g.observe(ok(0))
    g.observe(ok(20))
    g.observe(down(25))
    g.observe(ok(30))
    assert g.observe(ok(55)).action == "wait"
    assert g.observe(ok(60)).action == "commit"


def test_deadline_shorter_than_window_is_refused():
    with pytest.raises(ValueError):
        HealthGate(window_s=60, deadline_s=30)
