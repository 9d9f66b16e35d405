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

. "$root/tests/sdk/lib.sh"
sdk_install wechatpy "wechatpy==$WECHATPY_VERSION"
sdk_binary

tmp="$(mktemp -d)"
pid=""
cleanup() { sdk_stop_sandbox; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp"
sdk_start_sandbox "$tmp"

echo "wechatpy $("$PY" -c 'import wechatpy; print(wechatpy.__version__)') against $SANDBOX_HTTPS_URL"
"$PY" tests/sdk/wechatpy_smoke.py

# APIv3: the wechatpayv3 SDK in public-key and certificate mode (its own sandboxes).
MINIPAY_BIN="$bin" "$root/tests/sdk/run_v3.sh"
