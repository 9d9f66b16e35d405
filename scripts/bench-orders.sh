#!/usr/bin/env bash
# Order-creation benchmark (docs/PERFORMANCE.md, "Order creation"): a throwaway PostgreSQL
# cluster with normal durability (fsync and synchronous_commit on, the defaults), then on it:
#   1. pgbench -N -c 32 (the commit-rate ceiling on this machine),
#   2. `minipay bench orders` (created orders per second end to end, latency percentiles),
#      closed loop with the given concurrency, then open loop at 50 % of step 1's TPS
#      (OPEN_LOOP=0 skips it; extra args go to the closed-loop run only),
#   3. pgbench -N -c 32 again (to show the drift between the two measurements).
# Usage: scripts/bench-orders.sh [requests=10000] [concurrency=32] [extra bench args]
set -euo pipefail
N=${1:-10000}
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

cargo build --release -p minipay
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
echo "== minipay bench orders --requests $N --concurrency $C $* (closed loop)"
target/release/minipay bench orders --requests "$N" --concurrency "$C" --database-url "$URL" "$@"
if [ "${OPEN_LOOP:-1}" != 0 ]; then
  RATE=$(( TPS / 2 ))
  echo "== minipay bench orders --requests $N --rate $RATE --concurrency 128 (open loop at 50 % of pgbench's $TPS TPS)"
  target/release/minipay bench orders --requests "$N" --rate "$RATE" --concurrency 128 --database-url "$URL"
fi
echo "== pgbench -N -c 32 -j 2 -T $T (after)"
"$BIN/pgbench" -N -c 32 -j 2 -T "$T" -n "$URL" 2>/dev/null | grep -E "^tps|latency average"
