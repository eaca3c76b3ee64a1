#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine, in two sizes:
#   bash scripts/setup.sh --node   what running a node needs: Python with venv, and a .venv
#                                  with homenode installed editable (scripts/run-node.sh)
#   bash scripts/setup.sh          also what the tests need: the image and QEMU toolchain,
#                                  network-namespace tools, strace, Node.js for the MicroPython
#                                  runtime, the test extras (scripts/test.sh, CI)
# Add --no-apt to skip the Debian packages. apt waits for a lock another apt holds (up to
# APT_LOCK_WAIT seconds, default 600) instead of failing.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_APT=(python3 python3-venv python3-pip ca-certificates)
TEST_APT=(
  git nodejs npm
  # image build and QEMU boots (issue: SD image)
  mmdebstrap qemu-user-static qemu-system-arm qemu-utils arch-test binfmt-support
  dosfstools mtools e2fsprogs fdisk bmap-tools xz-utils zstd
  # network-namespace tests (issue: network)
  iproute2 nftables iptables miniupnpd
  # syscall traces: fsync before ack (store), directory fsync after rename (durable writes)
  strace
  # image config test logs in over SSH with a test key
  openssh-client
  # bridge tests compare the bridge with a stock Debian nginx + snakeoil cert (tests/bridge)
  nginx ssl-cert openssl curl
  # status page tests: headless Chromium loads the page; zbarimg decodes its QR code
  chromium zbar-tools
  # A/B updates (issue 11): RAUC bundles, U-Boot for QEMU -M virt, boot script and U-Boot
  # environment tools, signing keys; lgpio cross-built for the image's Python 3.13 (aarch64)
  rauc squashfs-tools u-boot-qemu u-boot-tools libubootenv-tool openssl
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross swig kmod
)

node_only=0 apt=1
for arg in "$@"; do
  case "$arg" in
    --node) node_only=1 ;;
    --no-apt) apt=0 ;;
    *) echo "setup: unknown option $arg (use --node and/or --no-apt)" >&2; exit 2 ;;
  esac
done
APT_PACKAGES=("${NODE_APT[@]}")
[ "$node_only" = 1 ] || APT_PACKAGES+=("${TEST_APT[@]}")
LOCK_WAIT="${APT_LOCK_WAIT:-600}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "setup: need root (or sudo) to run: $*" >&2; return 1; fi; }
apt_get() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$LOCK_WAIT" "$@"; }

apt_update() {
  # `apt-get update` takes the lists lock, which DPkg::Lock::Timeout does not cover (apt 2.6):
  # wait for it here, polling every APT_LOCK_POLL s.
  local out tries=0 poll="${APT_LOCK_POLL:-5}"
  local max=$((LOCK_WAIT / (poll > 0 ? poll : 1)))
  while ! out=$(apt_get update -qq 2>&1); do
    if grep -q "Could not get lock" <<<"$out" && [ "$tries" -lt "$max" ]; then
      [ "$tries" = 0 ] && echo "setup: another apt holds the lock; waiting (up to ${LOCK_WAIT} s)"
      sleep "$poll"; tries=$((tries + 1))
    else
      echo "$out" >&2; return 1
    fi
  done
}

if [ "$apt" = 1 ]; then
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
    apt_update
    apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extras=".[test]"
[ "$node_only" = 1 ] && extras="."
log=$(mktemp)
if ! { .venv/bin/python -m pip install -q --upgrade pip &&
       .venv/bin/python -m pip install -q -e "$extras"; } >"$log" 2>&1; then
  cat "$log" >&2; echo "setup: pip install failed (output above)" >&2; exit 1
fi
rm -f "$log"

if [ "$node_only" = 0 ] && [ -f tools/micropython/package.json ]; then
  (cd tools/micropython && npm install --no-audit --no-fund --silent)
fi
echo "setup: ready (.venv/bin/homenode)"
