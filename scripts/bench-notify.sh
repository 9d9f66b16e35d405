#!/usr/bin/env bash
# Notification benchmark (docs/PERFORMANCE.md, "Notifications"): a throwaway PostgreSQL
# cluster with normal durability (fsync and synchronous_commit on, the defaults), then on it:
#   1. pgbench -N -c 32 (the commit-rate ceiling on this machine),
#   2. the notify load generator, closed loop: C senders, each waiting for its answer
#      (verified notifications applied per second, end to end),
#   3. the same open loop at 80 % and 100 % of the first pgbench figure: notifications due
#      at a fixed rate, as WeChat sends them, on up to 256 connections; does the service
#      keep up, and at what latency (measured from when each was due)?
#   4. pgbench -N -c 32 again (to show the drift between the measurements).
# Usage: scripts/bench-notify.sh [notifications=20000] [concurrency=32] [extra args, e.g. dup]
# (extra args go to the closed-loop run only; OPEN_LOOP=0 skips step 3)
set -euo pipefail
N=${1:-20000}
C=${2:-32}
shift $(( $# > 2 ? 2 : $# ))
T=${PGBENCH_SECS:-20}
cd "$(dirname "$0")/.."
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DIR=$(mktemp -d /tmp/minipay-bench-XXXXXX)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
cleanup() { as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT

cargo build --release -p minipay-notify --example notify_load
as_pg "$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
psql() { "$BIN/psql" -X -q -At "$URL" "$@"; }
echo "server: $("$BIN/postgres" --version); fsync=$(psql -c 'SHOW fsync'), synchronous_commit=$(psql -c 'SHOW synchronous_commit'), cores: $(nproc)"

"$BIN/pgbench" -i -s 10 -q "$URL" >/dev/null 2>&1
echo "== pgbench -N -c 32 -j 2 -T $T (before)"
BEFORE=$("$BIN/pgbench" -N -c 32 -j 2 -T "$T" -n "$URL" 2>/dev/null | grep -E "^tps|latency average")
echo "$BEFORE"
TPS=$(echo "$BEFORE" | sed -n 's/^tps = \([0-9]*\).*/\1/p')
echo "== notify_load $N $C $* (closed loop)"
DATABASE_URL="$URL" target/release/examples/notify_load "$N" "$C" "$@"
if [ "${OPEN_LOOP:-1}" != 0 ]; then
  for PCT in 80 100; do
    RATE=$(( TPS * PCT / 100 ))
    echo "== notify_load $N 256 rate=$RATE (open loop at $PCT % of pgbench's $TPS TPS)"
    DATABASE_URL="$URL" target/release/examples/notify_load "$N" 256 "rate=$RATE"
  done
fi
echo "== pgbench -N -c 32 -j 2 -T $T (after)"
"$BIN/pgbench" -N -c 32 -j 2 -T "$T" -n "$URL" 2>/dev/null | grep -E "^tps|latency average"
