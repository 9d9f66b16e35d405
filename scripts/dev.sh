#!/usr/bin/env bash
# Runs the whole system locally with no configuration: installs PostgreSQL's binaries if the
# machine lacks them, then `minipay dev` starts a throwaway Postgres, the WeChat sandbox, the
# api, notify and worker services, and prints their URLs and a demo API key. Ctrl-C stops
# everything and removes the throwaway database.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_postgres
exec cargo run --quiet -p minipay -- dev "$@"
