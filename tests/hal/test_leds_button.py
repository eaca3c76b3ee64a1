"""LED outputs and the button on gpiozero's MockFactory plus a fake sysfs tree."""

import threading

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hal.backends.button import GpioButton
from hal.backends.factory import open_hardware
from hal.backends.leds import LedBank, SimLed
from hal.core import led
from hal.core.button import (
    FACTORY_RESET,
    HOLD_RESET,
    HOLD_SHUTDOWN,
    RESET_ARMED,
    SHORT_PRESS,
    SHUTDOWN,
    ButtonLogic,
)
from tests.hal.fakesys import FakeSys

RGB = (17, 27, 22)
MONO = 18


@pytest.fixture
def pi(tmp_path):
    fake = FakeSys(tmp_path / "root").pi()
    factory = MockFactory(pin_class=MockPWMPin)
    hw = open_hardware("pi", sysfs_root=fake.root, env={}, data_dir=str(tmp_path),
                       led_pin=MONO, rgb_pins=RGB, pin_factory=factory, vcgencmd=None)
    yield fake, factory, hw
    hw.close()
    factory.reset()


def play(anim, bank, fake, periods=2):
    """Run the animator over `periods` pattern periods; apply each change; return per-step
    (act file, pwr file) as written in sysfs."""
    files = []
    t = 0
    out, nxt = anim.poll(t)
    steps = 0
    while True:
        bank.apply(out, t)
        files.append((fake.read("/sys/class/leds/ACT/brightness").strip(),
                      fake.read("/sys/class/leds/PWR/brightness").strip()))
        steps += 1
        if nxt < 0 or steps >= periods * max(1, len(anim_pattern(anim).rhythm)):
            return files
        t = nxt
        out, nxt = anim.poll(t)


def anim_pattern(anim):
    return led.state_pattern(anim.state)


def expected_steps(pattern, periods=2):
    tl = pattern.timeline()
    return (tl * periods) if pattern.rhythm else tl


def values(pin):
    """Pin levels after the initial one, as gpiozero's MockPin recorded them."""
    return [s.state for s in pin.states[1:]]


def collapse(seq):
    out = []
    for v in seq:
        if not out or out[-1] != v:
            out.append(v)
    return out


@pytest.mark.parametrize("state", led.STATE_NAMES)
def test_every_output_follows_the_pattern_table(pi, state):
    fake, factory, hw = pi
    bank = hw.leds
    pattern = led.state_pattern(state)
    # start from all-off so every pin records the pattern's first edge
    bank.apply(led.LedOutput(led.BLACK, 0, 0))
    pins = {n: factory.pin(n) for n in (MONO,) + RGB}
    for p in pins.values():
        p.clear_states()
    files = play(led.LedAnimator(0, state), bank, fake)
    steps = expected_steps(pattern)
    assert len(files) == len(steps)
    # onboard LEDs via sysfs: ACT carries the rhythm at max_brightness, PWR the attention lamp
    for (act, pwr), (rgb, _ms) in zip(files, steps, strict=True):
        assert act == ("255" if rgb != led.BLACK else "0")
        assert pwr == ("255" if pattern.pwr else "0")
    assert fake.read("/sys/class/leds/ACT/trigger") == "none"
    # GPIO mono LED (PWMLED): level history equals the rhythm
    want_mono = collapse([1.0 if rgb != led.BLACK else 0.0 for rgb, _ in steps])
    assert values(pins[MONO]) == want_mono
    # RGB LED: each channel's PWM history equals the table colour / 255
    for i, n in enumerate(RGB):
        want = collapse([rgb[i] / 255 for rgb, _ in steps])
        if want == [0.0]:
            want = []  # never lit: no change recorded
        assert values(pins[n]) == pytest.approx(want), (state, n)


def test_closing_restores_the_onboard_triggers(tmp_path):
    fake = FakeSys(tmp_path / "root").pi()
    hw = open_hardware("pi", sysfs_root=fake.root, env={}, data_dir=str(tmp_path),
                       vcgencmd=None)
    assert fake.read("/sys/class/leds/PWR/trigger") == "none"
    hw.close()
    assert fake.read("/sys/class/leds/ACT/trigger") == "mmc0"
    assert fake.read("/sys/class/leds/PWR/trigger") == "default-on"


def test_sim_leds_record_transitions_with_times():
    act, rgb = SimLed("act"), SimLed("rgb")
    bank = LedBank(act=[act], rgb=[rgb])
    anim = led.LedAnimator(1000, "under_voltage")
    t = 1000
    for _ in range(8):
        out, nxt = anim.poll(t)
        bank.apply(out, t)
        t = nxt
    pattern = led.state_pattern("under_voltage")
    times = [1000]
    for ms in pattern.rhythm[:-1]:
        times.append(times[-1] + ms)
    assert list(act.transitions) == [(tm, i % 2 == 0 and 1 or 0) for i, tm in enumerate(times)]
    assert [v for _, v in rgb.transitions] == [led.RED, led.BLACK] * 4


# --- button ----------------------------------------------------------------------------------

class EdgeLog:
    """Collects edges from gpiozero's callback (which may come from another thread)."""

    def __init__(self):
        self.edges = []
        self.cond = threading.Condition()

    def __call__(self, pressed):
        with self.cond:
            self.edges.append(pressed)
            self.cond.notify_all()

    def wait_for(self, n, timeout=2.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.edges) >= n, timeout), self.edges
        return list(self.edges)


def test_gpio_button_edges_drive_the_gestures():
    factory = MockFactory()
    btn = GpioButton(4, pin_factory=factory, pull_up=True, bounce_ms=0)
    log = EdgeLog()
    btn.start(log)
    pin = factory.pin(4)
    logic = ButtonLogic(shutdown_ms=3000, reset_ms=10000, confirm_ms=15000)
    events = []
    # the logic gets the time from the caller; gpiozero only supplies edges
    script = [(0, "low"), (400, "high"),                          # short press
              (1000, "low"), (4500, "high"),                      # 3.5 s hold
              (6000, "low"), (17000, "high"), (20000, "low"), (20100, "high")]  # reset
    for i, (t, level) in enumerate(script):
        pin.drive_low() if level == "low" else pin.drive_high()
        pressed = log.wait_for(i + 1)[-1]
        events += logic.poll(t - 1)
        events += logic.press(t) if pressed else logic.release(t)
    assert log.edges == [True, False] * 4
    assert events == [SHORT_PRESS, HOLD_SHUTDOWN, SHUTDOWN, HOLD_SHUTDOWN, HOLD_RESET,
                      RESET_ARMED, FACTORY_RESET]
    btn.close()
    factory.reset()
