#!/usr/bin/env bash
# The long crash test: 1M keyed records through a stateful pipeline, `weir run` killed with
# SIGKILL 20 times at random moments and restarted, then every input accounted for.
# Sizes: WEIR_CRASH_RECORDS (default 1000000), WEIR_CRASH_KILLS (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-plugins.sh
export WEIR_CRASH_RECORDS="${WEIR_CRASH_RECORDS:-1000000}" WEIR_CRASH_KILLS="${WEIR_CRASH_KILLS:-20}"
export WEIR_TEST_KAFKA_PORT="${WEIR_TEST_KAFKA_PORT:-19092}"
trap 'KAFKA_PORT=$WEIR_TEST_KAFKA_PORT scripts/kafka-broker.sh stop >/dev/null 2>&1 || true' EXIT
cargo test --release -p weir --test all crash:: -- --nocapture
