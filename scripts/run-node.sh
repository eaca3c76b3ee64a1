#!/usr/bin/env bash
# Set up what a node needs (Python and a .venv: no image, QEMU or test tools), then run one node
# on this machine with the embedded defaults (SQLite store under ./.homenode, simulated
# hardware, listening on 127.0.0.1:7070). Extra arguments go to setup.sh (e.g. --no-apt).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --node "$@"
exec .venv/bin/homenode run --data-dir "${HOMENODE_DATA_DIR:-$PWD/.homenode}"
