from hal.core.button import (
    FACTORY_RESET,
    HOLD_RESET,
    HOLD_SHUTDOWN,
    RESET_ARMED,
    RESET_CANCELLED,
    SHORT_PRESS,
    SHUTDOWN,
    ButtonLogic,
)

from tests.hal.core.check import raises


def test_short_press_is_identify():
    b = ButtonLogic()
    assert b.press(1000) == []
    assert b.next_deadline() == 4000
    assert b.release(1500) == [SHORT_PRESS]
    assert b.next_deadline() == -1


def test_hold_three_seconds_announces_then_shuts_down_on_release():
    b = ButtonLogic()
    b.press(0)
    assert b.poll(2999) == []
    assert b.poll(3000) == [HOLD_SHUTDOWN]
    assert b.poll(3500) == []
    assert b.next_deadline() == 10000
    assert b.release(6000) == [SHUTDOWN]


def test_factory_reset_needs_a_release_and_a_second_press():
    b = ButtonLogic()
    b.press(0)
    assert b.release(10500) == [HOLD_SHUTDOWN, HOLD_RESET, RESET_ARMED]
    assert b.armed and b.next_deadline() == 25500
    assert b.press(12000) == [FACTORY_RESET]
    assert not b.armed
    assert b.release(12100) == []  # the confirming press is not also a short press


def test_reset_confirmation_times_out():
    b = ButtonLogic(shutdown_ms=30, reset_ms=100, confirm_ms=500)
    b.press(0)
    assert b.poll(100) == [HOLD_SHUTDOWN, HOLD_RESET]
    assert b.release(150) == [RESET_ARMED]
    assert b.poll(649) == []
    assert b.poll(650) == [RESET_CANCELLED]
    assert b.press(700) == []
    assert b.release(710) == [SHORT_PRESS]


def test_bounces_are_ignored():
    b = ButtonLogic()
    b.press(0)
    assert b.press(5) == []
    assert b.release(50) == [SHORT_PRESS]
    assert b.release(55) == []
    raises(ValueError, ButtonLogic, 3000, 3000)
