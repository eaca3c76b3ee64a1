#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine: system packages, a venv in .venv with homenode
# installed editable plus its test tools, and the MicroPython runtime for the HAL core tests.
# Usage: bash scripts/setup.sh [--no-apt]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-pip git ca-certificates
  nodejs npm
  # image build and QEMU boots (issue: SD image)
  mmdebstrap qemu-user-static qemu-system-arm qemu-utils arch-test binfmt-support
  dosfstools mtools e2fsprogs fdisk bmap-tools xz-utils zstd
  # network-namespace tests (issue: network)
  iproute2 nftables iptables miniupnpd
  # store durability test (syscall trace of fsync before ack)
  strace
  # image config test logs in over SSH with a test key
  openssh-client
  # bridge tests compare the bridge with a stock Debian nginx + snakeoil cert (tests/bridge)
  nginx ssl-cert openssl curl
  # status page tests: headless Chromium loads the page; zbarimg decodes its QR code
  chromium zbar-tools
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "setup: need root (or sudo) to run: $*" >&2; return 1; fi; }

if [ "${1:-}" != "--no-apt" ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # A machine may ship its own node/npm outside dpkg: don't fight it.
  if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
  fi
  read -ra missing <<<"${missing[*]}"
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
log=$(mktemp)
if ! { .venv/bin/python -m pip install -q --upgrade pip &&
       .venv/bin/python -m pip install -q -e '.[test]'; } >"$log" 2>&1; then
  cat "$log" >&2; echo "setup: pip install failed (output above)" >&2; exit 1
fi
rm -f "$log"

if [ -f tools/micropython/package.json ]; then
  (cd tools/micropython && npm install --no-audit --no-fund --silent)
fi
echo "setup: ready (.venv/bin/homenode)"
