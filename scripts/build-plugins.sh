#!/usr/bin/env bash
# Build every plugin crate (plugins/ and the test plugins in tests/plugins/) to a component,
# written beside its crate as NAME.wasm. One cargo run builds them all; the first run also
# compiles the wasm32 standard library (a minute or two), later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "build-plugins: building the weir CLI"
cargo build -q -p weir
echo "build-plugins: building plugin components"
cargo run -q -p weir -- build plugins/*/ tests/plugins/*/
