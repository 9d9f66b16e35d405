#!/usr/bin/env bash
# The whole minipay story against a running `minipay dev` (start it first: bash scripts/dev.sh):
# login, order, pay, notification, refund, payout with approval, red packet, and the
# reconciliation of the sandbox day, each step printed. Finds dev's dev.env by itself when
# only one dev is running; otherwise pass it: bash scripts/demo.sh --env /tmp/minipay-dev-PID/dev.env
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ] && [ -z "${MINIPAY_DEV_ENV:-}" ]; then
  envs=( "${TMPDIR:-/tmp}"/minipay-dev-*/dev.env )
  if [ ! -e "${envs[0]}" ]; then
    echo "no running minipay dev found (start it with: bash scripts/dev.sh)" >&2
    exit 1
  fi
  if [ ${#envs[@]} -gt 1 ]; then
    echo "several minipay dev are running; pick one: bash scripts/demo.sh --env FILE (${envs[*]})" >&2
    exit 1
  fi
  set -- --env "${envs[0]}"
fi
exec cargo run --quiet -p minipay -- demo "$@"
