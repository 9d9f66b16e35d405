# Shared by tests/sdk/run.sh and run_v3.sh (sourced; `root` and `PY` set by the caller).
# Neither script changes anything the other relies on.

# sdk_install MODULE REQUIREMENT: pip-installs REQUIREMENT (plus cryptography) unless MODULE
# and cryptography import already.
# pip runs with the machine's CA bundle as it was before any sandbox started: a sandbox
# exports REQUESTS_CA_BUNDLE (its own CA, for the SDK), and run_v3.sh, started by run.sh
# while run.sh's sandbox is up, would otherwise send PyPI's certificate to the sandbox CA.
SDK_SYSTEM_CA_BUNDLE=${SDK_SYSTEM_CA_BUNDLE-${REQUESTS_CA_BUNDLE-}}
export SDK_SYSTEM_CA_BUNDLE
sdk_install() {
  if ! "$PY" -c "import $1, cryptography" >/dev/null 2>&1; then
    echo "installing $2 from PyPI"
    if [ -n "$SDK_SYSTEM_CA_BUNDLE" ]; then
      REQUESTS_CA_BUNDLE="$SDK_SYSTEM_CA_BUNDLE" "$PY" -m pip install --quiet --disable-pip-version-check "$2" cryptography
    else
      env -u REQUESTS_CA_BUNDLE "$PY" -m pip install --quiet --disable-pip-version-check "$2" cryptography
    fi
  fi
}

# sdk_binary: sets `bin` to $MINIPAY_BIN, or builds the debug binary.
sdk_binary() {
  if [ -n "${MINIPAY_BIN:-}" ]; then
    bin="$MINIPAY_BIN"
  else
    cargo build --quiet -p minipay --bin minipay
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/minipay"
  fi
}

# sdk_start_sandbox DIR [ARGS...]: starts `minipay sandbox ARGS` on free ports with its
# certificates in DIR/certs, waits for its URLs, sets `pid` and exports SANDBOX_HTTP_URL,
# SANDBOX_HTTPS_URL, SANDBOX_CERTS and REQUESTS_CA_BUNDLE. Exits on failure.
sdk_start_sandbox() {
  local dir="$1"
  shift
  "$bin" sandbox "$@" --port 0 --tls-port 0 --certs-dir "$dir/certs" --time-scale 0.001 >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 1 300); do
    if grep -q '^SANDBOX_HTTPS_URL=' "$dir/out" 2>/dev/null; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "sandbox exited:"; cat "$dir/err"; exit 1; fi
    sleep 0.1
  done
  if ! grep -q '^SANDBOX_HTTPS_URL=' "$dir/out"; then echo "sandbox did not start:"; cat "$dir/err"; exit 1; fi
  SANDBOX_HTTP_URL="$(sed -n 's/^SANDBOX_HTTP_URL=//p' "$dir/out")"
  SANDBOX_HTTPS_URL="$(sed -n 's/^SANDBOX_HTTPS_URL=//p' "$dir/out")"
  export SANDBOX_HTTP_URL SANDBOX_HTTPS_URL SANDBOX_CERTS="$dir/certs" REQUESTS_CA_BUNDLE="$dir/certs/ca.pem"
  # Notifications go to a receiver on 127.0.0.1: keep any proxy out of the way.
  export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
}

# sdk_stop_sandbox: stops the sandbox started last, if any.
sdk_stop_sandbox() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=""
}
