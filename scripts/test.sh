#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing (PostgreSQL server,
# cargo-nextest), starts ONE throwaway PostgreSQL cluster for the run (initdb + pg_ctl on a
# free loopback port, as the `postgres` user when run as root), runs every Rust test against
# it (each test creates its own database), runs the third-party SDK check against the
# sandbox, checks deploy/ (scripts/check-deploy.sh: Kubernetes and compose schemas, nginx -t),
# and removes the cluster. Extra arguments go to `cargo nextest run`.
#
# With DATABASE_URL already set (an admin URL), that server is used and nothing is started.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_postgres

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

cleanup() { :; }
if [ -z "${DATABASE_URL:-}" ]; then
  PGTMP=$(mktemp -d /tmp/minipay-test-pg.XXXXXX)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGTMP"
  run_pg "$PG_BIN/initdb" -D "$PGTMP/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
  run_pg "$PG_BIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w -t 60 \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k $PGTMP -c max_connections=400 -c fsync=off -c full_page_writes=off" start >/dev/null
  cleanup() {
    run_pg "$PG_BIN/pg_ctl" -D "$PGTMP/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PGTMP"
  }
  trap cleanup EXIT
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
  echo "== throwaway PostgreSQL on 127.0.0.1:$PORT"
fi

echo "== deploy/: Kubernetes and compose schemas, nginx -t, Cloud Hosting files"
bash scripts/check-deploy.sh

# The container test (crates/cli/tests/container.rs) runs the binary that ships: a release
# build, as the Dockerfile makes it. MINIPAY_RELEASE_BIN=skip keeps the test build instead
# (quick local runs).
if [ "${MINIPAY_RELEASE_BIN:-}" != skip ]; then
  echo "== cargo build --release -p minipay (the binary the container test runs)"
  cargo build --release --quiet -p minipay --bin minipay
  export MINIPAY_RELEASE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/minipay"
else
  unset MINIPAY_RELEASE_BIN
fi

echo "== cargo nextest run --workspace"
cargo nextest run --workspace --no-fail-fast "$@"

if [ -f tests/sdk/run.sh ]; then
  echo "== third-party SDK against the sandbox"
  bash tests/sdk/run.sh
fi
echo "== all tests passed"
