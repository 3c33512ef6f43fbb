#!/usr/bin/env bash
# Set up what is missing, build the plugin components, and run every check and test.
# This is the command the README gives and the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-plugins.sh
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy -D warnings"
cargo clippy -q --workspace --all-targets -- -D warnings
echo "test: cargo test"
cargo test --workspace
