#!/usr/bin/env bash
# APIv3 per-operation costs (docs/PERFORMANCE.md, "Wire, v3"): the criterion bench of
# wxpay::v3 (request sign, answer verify, notification verify + decrypt), then the same
# operations with the wechatpayv3 2.0.4 SDK (installed from PyPI if missing), in one run so
# the two are measured on the same machine state.
# Usage: scripts/bench-v3.sh [sdk-runs=2000]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import wechatpayv3' 2>/dev/null; then
  "$PY" -m pip install --quiet 'wechatpayv3==2.0.4'
fi
echo "== wxpay::v3 (criterion)"
cargo bench -q -p wxpay --bench v3 -- --warm-up-time 1 --measurement-time 5 2>&1 | grep -E "^v3 |time:"
echo "== wechatpayv3 $("$PY" -c 'import importlib.metadata as m; print(m.version("wechatpayv3"))')"
"$PY" scripts/bench-v3-sdk.py "${1:-2000}"
