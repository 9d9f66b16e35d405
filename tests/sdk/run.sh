#!/usr/bin/env bash
# Runs tests/sdk/wechatpy_smoke.py against a fresh `minipay sandbox`: builds the binary,
# installs wechatpy from PyPI if missing, starts the sandbox on free ports with its
# certificates in a temporary directory, runs the script, stops the sandbox.
# Then runs tests/sdk/run_v3.sh (wechatpayv3, APIv3). Exits non-zero on any failure. Used by
# .ci/run.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
PY="${PYTHON:-python3}"
WECHATPY_VERSION="1.8.18"

if ! "$PY" -c "import wechatpy, cryptography" >/dev/null 2>&1; then
  echo "installing wechatpy==$WECHATPY_VERSION from PyPI"
  "$PY" -m pip install --quiet --disable-pip-version-check "wechatpy==$WECHATPY_VERSION" cryptography
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
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$bin" sandbox --port 0 --tls-port 0 --certs-dir "$tmp/certs" --time-scale 0.001 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 1 300); do
  if grep -q '^SANDBOX_HTTPS_URL=' "$tmp/out" 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "sandbox exited:"; cat "$tmp/err"; exit 1; fi
  sleep 0.1
done
if ! grep -q '^SANDBOX_HTTPS_URL=' "$tmp/out"; then echo "sandbox did not start:"; cat "$tmp/err"; exit 1; fi

export SANDBOX_HTTP_URL="$(sed -n 's/^SANDBOX_HTTP_URL=//p' "$tmp/out")"
export SANDBOX_HTTPS_URL="$(sed -n 's/^SANDBOX_HTTPS_URL=//p' "$tmp/out")"
export SANDBOX_CERTS="$tmp/certs"
export REQUESTS_CA_BUNDLE="$tmp/certs/ca.pem"
# Notifications go to a receiver on 127.0.0.1: keep any proxy out of the way.
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

echo "wechatpy $("$PY" -c 'import wechatpy; print(wechatpy.__version__)') against $SANDBOX_HTTPS_URL"
"$PY" tests/sdk/wechatpy_smoke.py

# APIv3: the wechatpayv3 SDK in public-key and certificate mode (its own sandboxes).
MINIPAY_BIN="$bin" "$root/tests/sdk/run_v3.sh"
