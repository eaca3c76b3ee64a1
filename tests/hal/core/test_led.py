from hal.core import led

from tests.hal.core.check import raises

REQUIRED = ("booting", "needs_setup", "connecting", "healthy", "throttled", "storage_trouble",
            "under_voltage", "updating", "fatal_error", "safe_to_unplug")


def test_table_has_every_required_state_with_unique_priorities():
    for name in REQUIRED:
        assert name in led.STATE_NAMES, name
    prios = sorted(row[1] for row in led.STATES)
    assert prios == list(range(1, len(led.STATES) + 1))
    assert "identify" in led.OVERLAY_NAMES


def test_every_code_is_distinguishable_on_a_single_led():
    seen = []
    for name in led.STATE_NAMES + led.OVERLAY_NAMES:
        p = led.state_pattern(name) if name in led.STATE_NAMES else led.overlay_pattern(name)
        assert p.rhythm not in seen, "%s repeats another code's rhythm" % name
        seen.append(p.rhythm)


def test_priority_order_named_in_the_issue():
    order = ("safe_to_unplug", "fatal_error", "updating", "under_voltage", "storage_trouble",
             "throttled", "booting", "needs_setup", "connecting", "healthy")
    for hi, lo in zip(order, order[1:]):
        assert led.priority(hi) < led.priority(lo), (hi, lo)


def test_pick_state_takes_the_highest_priority_and_keeps_its_reason():
    active = {"throttled": "hot", "storage_trouble": "disk full", "under_voltage": "psu"}
    assert led.pick_state(active) == ("under_voltage", "psu")
    active["fatal_error"] = "store corrupt"
    assert led.pick_state(active) == ("fatal_error", "store corrupt")
    assert led.pick_state({}) == ("healthy", "")
    raises(ValueError, led.pick_state, {"on_fire": "?"})


def test_timeline_alternates_colour_and_black():
    p = led.state_pattern("storage_trouble")
    tl = p.timeline()
    assert [ms for _, ms in tl] == list(p.rhythm)
    assert tl[0][0] == led.ORANGE and tl[1][0] == led.BLACK and tl[-1][0] == led.BLACK
    assert led.state_pattern("safe_to_unplug").timeline() == [(led.GREEN, 0)]


def test_pattern_at_walks_the_rhythm_and_repeats():
    p = led.state_pattern("healthy")  # 100 on, 2900 off
    assert p.at(0) == (True, 100)
    assert p.at(99) == (True, 1)
    assert p.at(100) == (False, 2900)
    assert p.at(3000) == (True, 100)
    assert p.at(3050 + 3000 * 7) == (True, 50)


def test_animator_follows_state_and_restarts_pattern_on_change():
    a = led.LedAnimator(1000)
    out, nxt = a.poll(1000)
    assert a.state == "booting" and out.rgb == led.WHITE and out.act == 1 and nxt == 1500
    out, nxt = a.poll(1500)
    assert out.rgb == led.BLACK and out.act == 0 and nxt == 2000
    assert a.set_state("fatal_error", 1700, "boom")
    assert not a.set_state("fatal_error", 1750, "boom again")
    out, nxt = a.poll(1700)
    assert out == led.LedOutput(led.RED, 1, 1) and nxt == 1800
    a.set_state("safe_to_unplug", 2000)
    out, nxt = a.poll(2000)
    assert out == led.LedOutput(led.GREEN, 1, 0) and nxt == -1


def test_identify_overlay_shows_then_expires():
    a = led.LedAnimator(0, "healthy")
    a.show_overlay("identify", 10000)
    out, nxt = a.poll(10000)
    assert a.overlay(10000) == "identify" and out.rgb == led.WHITE and nxt == 10080
    out, nxt = a.poll(14990)
    assert nxt == 15000
    assert a.overlay(15000) is None
    out, _ = a.poll(15000)
    assert out.rgb == led.GREEN  # healthy pattern, 15000 ms in: start of a period


def test_markdown_table_lists_every_code_in_priority_order():
    md = led.markdown_table()
    pos = [md.find("`%s`" % n) for n in ("safe_to_unplug", "fatal_error", "healthy")]
    assert 0 < pos[0] < pos[1] < pos[2]
    for name in led.STATE_NAMES + led.OVERLAY_NAMES:
        assert "`%s`" % name in md
    assert "3 flashes, pause" in md and "blip every 3.0 s" in md
