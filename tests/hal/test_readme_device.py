"""The README's device section is exactly what the code's tables generate."""

import pathlib

from firmware.device.docs import current_section, section_markdown
from firmware.device.settings import SECTIONS
from hal.core import led

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def section():
    return current_section(README.read_text())


def test_readme_device_section_is_generated_from_the_code():
    assert section() == section_markdown().strip("\n"), (
        "README.md device section is stale: run "
        ".venv/bin/python -m firmware.device.docs --write README.md")


def test_led_table_in_readme_matches_the_code_table_row_by_row():
    text = section()
    for name, prio, colour, _rhythm, pwr, meaning, action in led.STATES:
        p = led.state_pattern(name)
        row = (f"| {prio} | `{name}` | {p.describe()} | {led.colour_name(colour)} | "
               f"{'on' if pwr else 'off'} | {meaning} | {action} |")
        assert row in text, row


def test_every_device_setting_is_documented():
    text = section()
    for s in SECTIONS:
        assert f"`[{s.name}]`" in text
        for k in s.keys:
            assert f"| `{k.name}` |" in text, f"[{s.name}] {k.name} missing from README"


def test_button_actions_and_wiring_are_documented():
    text = section()
    for words in ("Short press", "Hold 3 s", "Hold 10 s", "rgb_pins = [17, 27, 22]",
                  "button_pin = 3", "led_pin = 18"):
        assert words in text
