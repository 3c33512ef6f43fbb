#!/usr/bin/env bash
# Build every plugin crate (plugins/ and the test plugins in tests/plugins/) to a component,
# written beside its crate as NAME.wasm. One cargo run builds them all; the first run also
# compiles the wasm32 standard library (a minute or two), later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The CLI is built the way `cargo test` builds it (with the test dependencies' features), so the
# test run that usually follows reuses it instead of compiling wasmtime a second time.
# Cargo's own progress shows (a first build compiles wasmtime and librdkafka: about ten minutes
# on two cores), and each phase says how long it took.
started=$SECONDS
echo "build-plugins: building the weir CLI (a first build takes about ten minutes)"
cargo test --workspace --no-run
echo "build-plugins: weir CLI ready in $((SECONDS - started))s"
weir="${CARGO_TARGET_DIR:-target}/debug/weir"
started=$SECONDS
echo "build-plugins: building plugin components"
"$weir" build plugins/*/ tests/plugins/*/
echo "build-plugins: plugin components ready in $((SECONDS - started))s"
