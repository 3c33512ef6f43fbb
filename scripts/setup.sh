#!/usr/bin/env bash
# Install what weir needs to build plugins and run its tests, idempotently:
#   - a Rust toolchain for the host (cargo, from rustup);
#   - cmake, a C++ compiler and libcurl headers, to build librdkafka into the weir binary (Debian's
#     librdkafka is too old to link against);
#   - the test broker's binary (scripts/kafka-broker.sh install), when WEIR_SETUP_BROKER=1;
#   - Debian's chromium, for the dashboard's browser test, when WEIR_SETUP_BROWSER=1;
#   - Debian's postgresql, for the change-data-capture tests, when WEIR_SETUP_POSTGRES=1;
#   - a Rust toolchain for wasm32 plugins: rustup's wasm32-unknown-unknown target where it is
#     installed, otherwise Debian's rustc-web + rust-web-src (std built from source), because
#     `rustup target add` cannot download here and would hang.
# Nothing here waits on the network without a time limit.
set -euo pipefail

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed (install Rust with rustup first)"
say "host toolchain: $(cargo --version)"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get is not available to install $*; install them by hand"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" = 0 ]; then
    timeout 600 $SUDO apt-get update -qq || die "apt-get update failed or timed out"
    APT_UPDATED=1
  fi
  timeout 1200 $SUDO apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed or timed out"
}
missing() {
  local pkg out=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || out+=("$pkg")
  done
  echo "${out[@]}"
}

if command -v dpkg-query >/dev/null; then
  read -r -a need <<<"$(missing cmake g++ libcurl4-openssl-dev)"
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (to build librdkafka)"
    apt_install "${need[@]}"
  fi
  say "librdkafka build tools: $(cmake --version | head -1)"
fi

if [ "${WEIR_SETUP_BROKER:-0}" = 1 ]; then
  "$(dirname "$0")/kafka-broker.sh" install
fi

if [ "${WEIR_SETUP_BROWSER:-0}" = 1 ]; then
  if ! command -v chromium >/dev/null; then
    say "installing chromium (the dashboard's test opens it in a headless browser)"
    apt_install chromium
  fi
  say "browser: $(chromium --version 2>/dev/null | head -1)"
fi

if [ "${WEIR_SETUP_POSTGRES:-0}" = 1 ]; then
  "$(dirname "$0")/postgres.sh" install
fi

sysroot=$(rustc --print sysroot 2>/dev/null || true)
if [ -n "$sysroot" ] && [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown/lib" ]; then
  say "wasm32 toolchain: rustup's wasm32-unknown-unknown target"
  exit 0
fi

read -r -a need <<<"$(missing rustc-web cargo-web rust-web-src lld-22)"
if [ ${#need[@]} -eq 0 ]; then
  say "wasm32 toolchain: Debian rustc-web ($(/usr/bin/rustc --version)) with rust-web-src"
  exit 0
fi

command -v apt-get >/dev/null || die "no rustup wasm32 target and no apt-get: run 'rustup target add wasm32-unknown-unknown'"
say "installing ${need[*]} (Debian's current Rust with its library source, to build wasm32 std)"
apt_install "${need[@]}"
[ -x /usr/bin/rust-lld ] || die "/usr/bin/rust-lld is missing after installing lld-22"
say "wasm32 toolchain: Debian rustc-web ($(/usr/bin/rustc --version)) with rust-web-src"
