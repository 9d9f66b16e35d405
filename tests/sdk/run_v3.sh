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

if ! "$PY" -c "import wechatpayv3, cryptography" >/dev/null 2>&1; then
  echo "installing wechatpayv3==$WECHATPAYV3_VERSION from PyPI"
  "$PY" -m pip install --quiet --disable-pip-version-check "wechatpayv3==$WECHATPAYV3_VERSION" cryptography
fi

# MINIPAY_BIN: use an already built binary instead of building one.
if [ -n "${MINIPAY_BIN:-}" ]; then
  bin="$MINIPAY_BIN"
else
  cargo build --quiet -p minipay --bin minipay
  bin="${CARGO_TARGET_DIR:-$root/target}/debug/minipay"
fi

tmp="$(mktemp -d)"
pid=""
stop() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=""
}
cleanup() { stop; rm -rf "$tmp"; }
trap cleanup EXIT
# Notifications go to a receiver on 127.0.0.1: keep any proxy out of the way.
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

for mode in public_key certificate; do
  dir="$tmp/$mode"
  mkdir -p "$dir"
  cat >"$dir/sandbox.toml" <<TOML
[[merchants]]
mch_id = "1900000109"
api_key = "192006250b4c09247ec02edce69f6a2d"
v3_mode = "$mode"
TOML
  "$bin" sandbox --config "$dir/sandbox.toml" --port 0 --tls-port 0 --certs-dir "$dir/certs" --time-scale 0.001 \
    >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 1 300); do
    if grep -q '^SANDBOX_HTTPS_URL=' "$dir/out" 2>/dev/null; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "sandbox exited:"; cat "$dir/err"; exit 1; fi
    sleep 0.1
  done
  if ! grep -q '^SANDBOX_HTTPS_URL=' "$dir/out"; then echo "sandbox did not start:"; cat "$dir/err"; exit 1; fi
  export SANDBOX_HTTP_URL="$(sed -n 's/^SANDBOX_HTTP_URL=//p' "$dir/out")"
  export SANDBOX_HTTPS_URL="$(sed -n 's/^SANDBOX_HTTPS_URL=//p' "$dir/out")"
  export SANDBOX_CERTS="$dir/certs"
  export REQUESTS_CA_BUNDLE="$dir/certs/ca.pem"
  export V3_MODE="$mode"
  echo "wechatpayv3 $WECHATPAYV3_VERSION ($mode mode) against $SANDBOX_HTTPS_URL"
  "$PY" tests/sdk/wechatpayv3_smoke.py
  stop
done
