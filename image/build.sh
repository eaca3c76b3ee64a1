#!/usr/bin/env bash
# Build the SD image: dist/homenode-<version>-arm64.img.xz (+ .sha256, .bmap, Imager JSON).
# Needs root and the Debian tools from scripts/setup.sh. Arguments go to `python3 -m image.build`
# (see --help). Cache: $HOMENODE_IMAGE_CACHE or /var/cache/homenode-image.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
exec "$PY" -m image.build "$@"
