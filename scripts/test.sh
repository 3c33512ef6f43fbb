#!/usr/bin/env bash
# Set up what is missing, build the plugin components, and run every check and test.
# This is the command the README gives and the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

WEIR_SETUP_BROKER=1 WEIR_SETUP_BROWSER=1 WEIR_SETUP_POSTGRES=1 scripts/setup.sh
scripts/build-plugins.sh
# The Kafka tests start their broker (scripts/kafka-broker.sh) on this port; stop it when done.
export WEIR_TEST_KAFKA_PORT="${WEIR_TEST_KAFKA_PORT:-19092}"
# The change-data-capture tests start a PostgreSQL server (scripts/postgres.sh) on this one.
export WEIR_TEST_PG_PORT="${WEIR_TEST_PG_PORT:-25433}"
stop_servers() {
  KAFKA_PORT=$WEIR_TEST_KAFKA_PORT scripts/kafka-broker.sh stop >/dev/null 2>&1 || true
  PG_PORT=$WEIR_TEST_PG_PORT scripts/postgres.sh stop >/dev/null 2>&1 || true
}
trap stop_servers EXIT
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy -D warnings"
cargo clippy -q --workspace --all-targets -- -D warnings
# Build and run timed apart, so a change to how the tests are built shows in CI's log.
echo "test: cargo test --no-run (building the tests)"
started=$SECONDS
cargo test --workspace --no-run
built=$((SECONDS - started))
echo "test: cargo test"
started=$SECONDS
cargo test --workspace
echo "test: the tests took ${built}s to build and $((SECONDS - started))s to run"
