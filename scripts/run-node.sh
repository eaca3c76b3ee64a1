#!/usr/bin/env bash
# Set everything up, then run one node on this machine with the embedded defaults
# (SQLite store under ./.homenode, simulated hardware, listening on 127.0.0.1:7070).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "$@"
exec .venv/bin/homenode run --data-dir "${HOMENODE_DATA_DIR:-$PWD/.homenode}"
