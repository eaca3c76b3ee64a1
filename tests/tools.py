"""A test that needs an outside tool: locally a missing tool skips with the reason; under the
README's test command (scripts/test.sh sets HOMENODE_REQUIRE_TOOLS=1) and in CI (CI set) it
FAILS, so a proof cannot silently disappear because a package was not installed."""

import os
import shutil

import pytest


def strict() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("HOMENODE_REQUIRE_TOOLS"))


def missing_tool(problem: str) -> None:
    """Fail (strict) or skip with `problem`, which should say how to install what is missing."""
    if strict():
        pytest.fail(f"required tool missing: {problem} (bash scripts/setup.sh installs it)",
                    pytrace=False)
    pytest.skip(problem)


def require_tools(*tools: str, package: str) -> None:
    """Every tool in `tools` must be on PATH; `package` names the Debian package(s)."""
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        missing_tool(f"{', '.join(absent)} not found on PATH (apt-get install {package})")
