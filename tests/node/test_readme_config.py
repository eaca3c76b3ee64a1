"""The README's table of the node's own settings ([node], [limits], [store]) is the schema's.

Why a test: the table is written by hand and fell behind once ([limits] gained six keys the
README never showed). Print the table as the schema has it, to paste into README.md:

    .venv/bin/python -m tests.node.test_readme_config
"""

import json
import pathlib

from firmware.settings import CORE_SECTIONS

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | list):
        return json.dumps(v)
    return repr(v)


def schema_rows() -> list[str]:
    return [f"| `[{s.name}] {k.name}` | `{_value(k.default)}` | {k.help}; {k.allowed()} |"
            for s in CORE_SECTIONS for k in s.keys]


def readme_rows() -> list[str]:
    text = README.read_text()
    section = text[text.index("<!-- section:config -->"):text.index("<!-- /section:config -->")]
    return [line for line in section.splitlines() if line.startswith("| `[")]


def test_the_readme_lists_every_core_setting_as_the_schema_has_it():
    expected, got = schema_rows(), readme_rows()
    missing = [r for r in expected if r not in got]
    stale = [r for r in got if r not in expected]
    assert not missing and not stale, (
        "README.md's settings table differs from the schema (firmware/settings.py); print the "
        "current table with: .venv/bin/python -m tests.node.test_readme_config\n"
        + "\n".join(["missing or changed:", *missing, "not in the schema:", *stale]))
    assert got == expected  # and in the schema's order


if __name__ == "__main__":
    print("| Key | Default | Meaning; allowed values |\n|---|---|---|")
    print("\n".join(schema_rows()))
