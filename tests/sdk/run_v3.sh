#!/usr/bin/env bash
# Runs tests/sdk/wechatpayv3_smoke.py (the unmodified wechatpayv3 SDK from PyPI) against a
# fresh `minipay sandbox` in public-key and then certificate mode: builds the binary,
# installs wechatpayv3 if missing, starts the sandbox on free ports with a one-merchant
# configuration in the mode and its certificates in a temporary directory, runs the
# script, stops the sandbox. Exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
PY="${PYTHON:-python3}"
WECHATPAYV3_VERSION="2.0.4"

. "$root/tests/sdk/lib.sh"
sdk_install wechatpayv3 "wechatpayv3==$WECHATPAYV3_VERSION"
sdk_binary

tmp="$(mktemp -d)"
pid=""
cleanup() { sdk_stop_sandbox; rm -rf "$tmp"; }
trap cleanup EXIT

for mode in public_key certificate; do
  dir="$tmp/$mode"
  mkdir -p "$dir"
  cat >"$dir/sandbox.toml" <<TOML
[[merchants]]
mch_id = "1900000109"
api_key = "192006250b4c09247ec02edce69f6a2d"
v3_mode = "$mode"
TOML
  sdk_start_sandbox "$dir" --config "$dir/sandbox.toml"
  export V3_MODE="$mode"
  echo "wechatpayv3 $WECHATPAYV3_VERSION ($mode mode) against $SANDBOX_HTTPS_URL"
  "$PY" tests/sdk/wechatpayv3_smoke.py
  sdk_stop_sandbox
done
