#!/usr/bin/env bash
# Start and stop a local PostgreSQL server for weir's change-data-capture tests, benchmark and demo.
#
# The server is Debian's `postgresql` package (15 on bookworm), run from a scratch data directory
# with logical replication on (wal_level=logical) and a port of its own, so it never touches a
# system cluster. As root it runs as the `postgres` user (PostgreSQL refuses to run as root).
#
#   postgres.sh install|start|stop|restart|status|env|psql [ARGS…]
#
#   install  install Debian's postgresql package when it is missing (setup does this)
#   start    idempotent: a server already running on PG_PORT is reported and left alone; the first
#            start creates the data directory (initdb) with PG_PASSWORD as the superuser's password
#   stop     fast shutdown (open sessions are ended, nothing committed is lost)
#   status   exit 0 if running, 1 if not
#   env      prints `export WEIR_PG_URL=…` and `export WEIR_PG_PASSWORD=…`
#   psql     psql connected to the server as the superuser, with the remaining arguments
#
# Environment:
#   PG_PORT           port on 127.0.0.1 (default 25432); one server (one data directory) per port.
#                     The project's ports sit below Linux's ephemeral range (32768-60999): a port
#                     in it may be taken by any outgoing connection's local end, and the server
#                     then cannot bind it
#   PG_HOME           where data directories live (default /tmp/weir-postgres): $PG_HOME/$PG_PORT
#   PG_PASSWORD       the superuser `postgres`'s password (default weir); connections over TCP need
#                     it (scram-sha-256), as a real deployment's would
#   PG_START_TIMEOUT  seconds to wait for the server to accept connections (default 30)
#   PG_WAL_LEVEL      wal_level (default logical; the tests start one at `replica` to see it refused)
#
# The server is tuned for tests, not for durability: fsync is off (a crash of the machine may lose
# its data; a crash of weir or a fast restart of the server loses nothing).
set -euo pipefail

die() { echo "postgres: $*" >&2; exit 1; }
say() { echo "postgres: $*"; }

PORT=${PG_PORT:-25432}
HOME_DIR=${PG_HOME:-/tmp/weir-postgres}
PASSWORD=${PG_PASSWORD:-weir}
START_TIMEOUT=${PG_START_TIMEOUT:-30}
case $PORT in ''|*[!0-9]*) die "PG_PORT must be a port number, got '$PORT'" ;; esac
case $START_TIMEOUT in ''|*[!0-9]*) die "PG_START_TIMEOUT must be whole seconds" ;; esac
WAL_LEVEL=${PG_WAL_LEVEL:-logical}
DATA=$HOME_DIR/$PORT
LOG=$HOME_DIR/$PORT.log

bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] || die "PostgreSQL is not installed: run '$0 install' (Debian's postgresql package)"
  echo "$dir"
}

# Run a command as the user that owns the server: `postgres` when we are root.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

install() {
  if ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    say "installed: $("$(bindir)/postgres" --version)"
    return
  fi
  command -v apt-get >/dev/null || die "apt-get is not available: install PostgreSQL 15 or later by hand"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 $sudo apt-get update -qq || die "apt-get update failed or timed out"
  timeout 1200 $sudo apt-get install -y -qq postgresql >/dev/null || die "apt-get install postgresql failed"
  say "installed: $("$(bindir)/postgres" --version)"
}

running() {
  as_owner "$(bindir)/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

init() {
  [ -f "$DATA/PG_VERSION" ] && return
  say "creating a data directory in $DATA"
  mkdir -p "$HOME_DIR"
  chmod 755 "$HOME_DIR"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  local pwfile
  pwfile=$(mktemp)
  echo "$PASSWORD" >"$pwfile"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$DATA" "$pwfile"
    touch "$LOG" && chown postgres "$LOG"
  fi
  as_owner "$(bindir)/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null \
    || { rm -f "$pwfile"; die "initdb failed"; }
  rm -f "$pwfile"
}

start() {
  if running; then
    say "already running on 127.0.0.1:$PORT ($DATA)"
    return
  fi
  init
  local options="-c port=$PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DATA"
  options+=" -c wal_level=$WAL_LEVEL -c max_replication_slots=32 -c max_wal_senders=32"
  options+=" -c fsync=off -c full_page_writes=off"
  as_owner "$(bindir)/pg_ctl" -D "$DATA" -l "$LOG" -o "$options" -w -t "$START_TIMEOUT" start >/dev/null \
    || die "the server did not start within ${START_TIMEOUT}s; its log:$(echo; tail -20 "$LOG")"
  say "running on 127.0.0.1:$PORT ($("$(bindir)/postgres" --version), wal_level=$WAL_LEVEL)"
}

stop() {
  if ! running; then
    say "not running on $PORT"
    return
  fi
  as_owner "$(bindir)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || die "pg_ctl stop failed"
  say "stopped ($PORT)"
}

command=${1:-}
[ $# -gt 0 ] && shift
case $command in
  install) install ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) running ;;
  env)
    echo "export WEIR_PG_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
    echo "export WEIR_PG_PASSWORD=$PASSWORD"
    ;;
  psql) as_owner psql -h "$DATA" -p "$PORT" -U postgres -X -q "$@" ;;
  *) die "usage: $0 install|start|stop|restart|status|env|psql [ARGS…]" ;;
esac
