#!/usr/bin/env bash
# Set up, build the example plugins, and run the demo: sample Debezium order changes through a
# three-stage chain (cdc-unwrap -> json-filter -> mask-pii) with `weir test`, no broker needed.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-plugins.sh
echo
echo "demo: examples/orders.toml over examples/orders.jsonl"
echo "demo: $(grep -c . examples/orders.jsonl) Debezium change events in; outputs:"
"${CARGO_TARGET_DIR:-target}/debug/weir" test examples/orders.toml --input examples/orders.jsonl --format envelope
