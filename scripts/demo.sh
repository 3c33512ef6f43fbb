#!/usr/bin/env bash
# Set up, build the example plugins, and run the demo: `weir demo` streams generated Debezium
# order changes through a three-stage chain (cdc-unwrap -> json-filter -> mask-pii,
# examples/orders.toml) on an in-process Kafka cluster, so no broker is needed.
# Arguments go to `weir demo` (e.g. --records 100000).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-plugins.sh
echo
echo "demo: weir demo $*"
"${CARGO_TARGET_DIR:-target}/debug/weir" demo "$@"
