#!/usr/bin/env bash
# Install what weir needs to build plugins and run its tests, idempotently:
#   - a Rust toolchain for the host (cargo, from rustup);
#   - a Rust toolchain for wasm32 plugins: rustup's wasm32-unknown-unknown target where it is
#     installed, otherwise Debian's rustc-web + rust-web-src (std built from source), because
#     `rustup target add` cannot download here and would hang.
# Nothing here waits on the network without a time limit.
set -euo pipefail

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed (install Rust with rustup first)"
say "host toolchain: $(cargo --version)"

sysroot=$(rustc --print sysroot 2>/dev/null || true)
if [ -n "$sysroot" ] && [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown/lib" ]; then
  say "wasm32 toolchain: rustup's wasm32-unknown-unknown target"
  exit 0
fi

need=()
for pkg in rustc-web cargo-web rust-web-src lld-22; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  say "wasm32 toolchain: Debian rustc-web ($(/usr/bin/rustc --version)) with rust-web-src"
  exit 0
fi

command -v apt-get >/dev/null || die "no rustup wasm32 target and no apt-get: run 'rustup target add wasm32-unknown-unknown'"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
say "installing ${need[*]} (Debian's current Rust with its library source, to build wasm32 std)"
export DEBIAN_FRONTEND=noninteractive
timeout 600 $SUDO apt-get update -qq || die "apt-get update failed or timed out"
timeout 1200 $SUDO apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed or timed out"
[ -x /usr/bin/rust-lld ] || die "/usr/bin/rust-lld is missing after installing lld-22"
say "wasm32 toolchain: Debian rustc-web ($(/usr/bin/rustc --version)) with rust-web-src"
