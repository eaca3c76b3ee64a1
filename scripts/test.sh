#!/usr/bin/env bash
# Set everything up (node and test needs), lint, then run the whole test suite (QEMU and netns
# tests included). CI runs exactly this. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -m "not qemu and not netns"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# A test whose tool is missing fails here instead of skipping (tests/tools.py).
export HOMENODE_REQUIRE_TOOLS=1
exec .venv/bin/python -m pytest "$@"
