#!/usr/bin/env bash
# Set everything up, then run the whole test suite (QEMU and netns tests included).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not qemu and not netns"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
