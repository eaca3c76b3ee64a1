"""The README's status-page section stays true: every [web] and [join] key documented with its
default, the screenshot is there and small, the example commands exist."""

import pathlib

from firmware.cli import COMMANDS
from firmware.config import _toml_value
from firmware.join.settings import JOIN
from firmware.web.settings import WEB

REPO = pathlib.Path(__file__).resolve().parents[2]


def section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("<!-- section:window -->")[1].split("<!-- /section:window -->")[0]


def test_every_web_and_join_setting_is_documented_with_its_default():
    text = section()
    for s in (WEB, JOIN):
        assert f"`[{s.name}]` - {s.help}" in text
        for k in s.keys:
            assert f"| `{k.name}` | `{_toml_value(k.default)}` | {k.help} |" in text, k.name


def test_screenshot_is_committed_and_small():
    png = REPO / "docs" / "status-page.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 150_000
    assert 'src="docs/status-page.png"' in section()


def test_the_commands_it_shows_exist():
    names = {c.name for c in COMMANDS}
    assert {"status", "diag"} <= names
    assert "homenode status --full" in section() and "homenode diag" in section()
