#!/usr/bin/env bash
# The whole pattern weir is for, on this machine: an application writes orders to PostgreSQL;
# weir captures every committed change from the write-ahead log (no Debezium, no dual writes),
# unwraps it, keeps the paid orders and keys them by customer, into Kafka
# (examples/cdc.toml); a second weir pipeline keeps each customer's running count and sum
# (examples/cdc-totals.toml). At the end, the totals in Kafka are checked against the database's
# own GROUP BY: the script fails if they differ.
#
# It starts its own PostgreSQL (scripts/postgres.sh) and Kafka-protocol broker
# (scripts/kafka-broker.sh) on ports of their own, and stops them when done.
#
#   DEMO_SECONDS     how long the application writes (default 20)
#   DEMO_PG_PORT     the database's port (default 25450)
#   DEMO_KAFKA_PORT  the broker's port (default 19450)
#   DEMO_SKIP_BUILD  1: take the weir binary (WEIR_BIN) and plugins as they are, install nothing
#                    (the test that runs this script does)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_WRITE=${DEMO_SECONDS:-20}
PG_PORT=${DEMO_PG_PORT:-25450}
KAFKA_PORT=${DEMO_KAFKA_PORT:-19450}
export PG_PORT KAFKA_PORT
say() { echo "demo-cdc: $*"; }

if [ "${DEMO_SKIP_BUILD:-0}" != 1 ]; then
  WEIR_SETUP_BROKER=1 WEIR_SETUP_POSTGRES=1 scripts/setup.sh
  scripts/build-plugins.sh
fi
weir="${WEIR_BIN:-${CARGO_TARGET_DIR:-target}/debug/weir}"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/kafka-broker.sh stop >/dev/null 2>&1 || true
  scripts/postgres.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

scripts/postgres.sh start
scripts/kafka-broker.sh start
eval "$(scripts/postgres.sh env)"
export PGPASSWORD=$WEIR_PG_PASSWORD
psql() { scripts/postgres.sh psql "$@"; }

say "creating database shop with table orders"
psql -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'weir_shop'" >/dev/null
psql -c "DROP DATABASE IF EXISTS shop WITH (FORCE)" -c "CREATE DATABASE shop" >/dev/null
psql -d shop -c "CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL,
                 amount int NOT NULL, status text NOT NULL DEFAULT 'new')" >/dev/null

# The example pipelines, pointed at this run's database, broker, plugins and topics.
run=$(date +%s)
plugins="$PWD/plugins"
for name in cdc cdc-totals; do
  sed -e "s#127.0.0.1:5432#127.0.0.1:$PG_PORT#" \
      -e "s#127.0.0.1:9092#127.0.0.1:$KAFKA_PORT#" \
      -e "s#\.\./plugins/#$plugins/#" \
      -e "s#\"shop\.paid-orders\"#\"shop-$run.paid-orders\"#" \
      -e "s#\"shop\.customer-totals\"#\"shop-$run.customer-totals\"#" \
      -e "s#topic_prefix = \"shop\"#topic_prefix = \"shop-$run\"#" \
      -e "s#group = \"weir-shop-totals\"#group = \"weir-shop-totals-$run\"#" \
      "examples/$name.toml" >"$work/$name.toml"
done
printf '\n[state]\ndir = "%s/state"\n' "$work" >>"$work/cdc-totals.toml"
totals_topic="shop-$run.customer-totals"
scripts/kafka-broker.sh create-topic "$totals_topic"

say "starting weir run examples/cdc.toml (Postgres -> Kafka) and examples/cdc-totals.toml (running totals)"
"$weir" run "$work/cdc.toml" --admin 127.0.0.1:0 --quiet 2>"$work/cdc.log" &
pids+=($!)
until grep -q "running " "$work/cdc.log"; do
  sleep 0.2
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/cdc.log"; exit 1; }
done
"$weir" run "$work/cdc-totals.toml" --admin 127.0.0.1:0 --quiet 2>"$work/totals.log" &
pids+=($!)
for log in cdc totals; do
  until grep -q "admin server on" "$work/$log.log"; do sleep 0.2; done
  say "dashboard of $log: $(grep -o 'http://[0-9.]*:[0-9]*' "$work/$log.log" | head -1)/"
done

say "the application writes for ${SECONDS_TO_WRITE}s: new orders, some paid, some cancelled"
end=$((SECONDS + SECONDS_TO_WRITE))
while [ "$SECONDS" -lt "$end" ]; do
  psql -d shop -c "BEGIN;
    INSERT INTO orders (customer, amount)
      SELECT (ARRAY['alice','bob','carol','dave'])[1 + floor(random() * 4)::int],
             1 + floor(random() * 200)::int
      FROM generate_series(1, 5);
    UPDATE orders SET status = 'paid'
      WHERE id IN (SELECT id FROM orders WHERE status = 'new' ORDER BY random() LIMIT 3);
    DELETE FROM orders
      WHERE id IN (SELECT id FROM orders WHERE status = 'new' ORDER BY random() LIMIT 1);
    COMMIT;" >/dev/null
  sleep 0.1
done

want=$(psql -d shop -A -t -F ' ' -c "SELECT customer, count(*), sum(amount) FROM orders
        WHERE status = 'paid' GROUP BY customer ORDER BY customer")
say "the database says (customer, paid orders, sum):"
echo "$want" | sed 's/^/  /'

# The last totals of each customer in Kafka, as a read_committed consumer sees them.
kafka_totals() {
  python3 scripts/kafka-read-committed.py --brokers "127.0.0.1:$KAFKA_PORT" --topic "$totals_topic" |
    python3 -c '
import json, sys
last = {}
for line in sys.stdin:
    r = json.loads(line)
    if r.get("value") is not None:
        last[r["key"]] = json.loads(r["value"])
for k in sorted(last):
    print(k, last[k]["count"], last[k]["sum"])'
}
got=""
for _ in $(seq 60); do
  got=$(kafka_totals 2>/dev/null || true)
  [ "$got" = "$want" ] && break
  sleep 1
done
say "Kafka's $totals_topic says:"
echo "$got" | sed 's/^/  /'
if [ "$got" != "$want" ]; then
  say "they differ: see $work/cdc.log and $work/totals.log"
  trap - EXIT
  cleanup
  exit 1
fi
say "they match: every committed change reached the totals, once"
