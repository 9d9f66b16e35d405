#!/usr/bin/env bash
# Checks deploy/ without a container engine, on a clean machine (installs what it needs):
#   - the Kubernetes manifests against the Kubernetes API schemas (kubernetes-validate, PyPI,
#     strict: unknown fields are errors), and kustomization.yaml lists every manifest;
#   - the compose file against the compose specification (check-jsonschema's vendored
#     compose-spec schema, PyPI);
#   - the nginx TLS example with `nginx -t` (Debian's nginx), with a throwaway CA, an
#     intermediate and a leaf for pay.example.com standing in for the real full chain;
#   - the WeChat Cloud Hosting container.config.json files parse and name what 云托管 needs.
# Called by scripts/test.sh; run it alone after editing deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

TOOLS=${MINIPAY_TOOLS_DIR:-target/deploy-tools}
VENV="$TOOLS/venv"
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/check-jsonschema" ]; then
  echo "== installing kubernetes-validate and check-jsonschema (PyPI) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0'
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "== installing nginx (Debian)"
  as_root apt-get update -qq
  # The package's postinst may try to start nginx; a machine without an init system says so
  # and carries on.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "== Kubernetes manifests (strict, Kubernetes 1.37 schemas)"
k8s=(deploy/k8s/*.yaml)
manifests=()
for f in "${k8s[@]}"; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
"$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version 1.37.0 "${manifests[@]}"
for f in "${manifests[@]}"; do
  b=$(basename "$f")
  case "$b" in
    *.example.yaml) ! grep -q -- "- $b" deploy/k8s/kustomization.yaml || { echo "$b must not be in kustomization.yaml"; exit 1; } ;;
    *) grep -q -- "- $b" deploy/k8s/kustomization.yaml || { echo "deploy/k8s/kustomization.yaml does not list $b"; exit 1; } ;;
  esac
done
echo "   ${#manifests[@]} files valid"

echo "== compose file (compose specification)"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "== nginx -t on deploy/nginx-tls.conf"
NG=$(mktemp -d /tmp/minipay-nginx.XXXXXX)
trap 'rm -rf "$NG"' EXIT
mkdir -p "$NG/tls/pay.example.com" "$NG/logs"
(
  cd "$NG/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=check-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout int.key -out int.csr -subj /CN=check-intermediate 2>/dev/null
  printf 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign\n' > int.ext
  openssl x509 -req -in int.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out int.pem -days 2 -extfile int.ext 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout pay.example.com/privkey.pem -out leaf.csr -subj /CN=pay.example.com 2>/dev/null
  printf 'subjectAltName=DNS:pay.example.com\nextendedKeyUsage=serverAuth\n' > leaf.ext
  openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -CAcreateserial -out leaf.pem -days 2 -extfile leaf.ext 2>/dev/null
  cat leaf.pem int.pem > pay.example.com/fullchain.pem
  # The chain as served verifies up to the root: the leaf alone would not.
  openssl verify -CAfile ca.pem -untrusted pay.example.com/fullchain.pem pay.example.com/fullchain.pem >/dev/null
)
sed -e "s#/etc/nginx/tls/#$NG/tls/#g" -e "s#/var/www/acme#$NG/acme#g" deploy/nginx-tls.conf > "$NG/minipay.conf"
cat > "$NG/nginx.conf" <<CONF
pid $NG/nginx.pid;
error_log $NG/logs/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $NG/body;
    proxy_temp_path $NG/proxy;
    fastcgi_temp_path $NG/fastcgi;
    uwsgi_temp_path $NG/uwsgi;
    scgi_temp_path $NG/scgi;
    include $NG/minipay.conf;
}
CONF
"$NGINX" -t -q -p "$NG" -c "$NG/nginx.conf"
# The rules the seed sets, read back from the example itself.
grep -Eq '^\s*ssl_protocols\s+TLSv1\.2 TLSv1\.3;' deploy/nginx-tls.conf || { echo "nginx: TLS 1.2+ only"; exit 1; }
grep -Eq '^\s*ssl_certificate\s+\S*fullchain\.pem;' deploy/nginx-tls.conf || { echo "nginx: serve the full chain"; exit 1; }
grep -Eq '^\s*listen 443 ssl' deploy/nginx-tls.conf || { echo "nginx: HTTPS on 443 (no port in URLs)"; exit 1; }
echo "   nginx -t ok"

echo "== WeChat Cloud Hosting container.config.json"
python3 - deploy/tencent/*/container.config.json <<'PY'
import json, re, sys
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8").read()
    # 云托管 accepts JSON with comments (jsonc): strip // comments outside strings.
    text = re.sub(r'("(?:\\.|[^"\\])*")|//[^\n]*', lambda m: m.group(1) or "", text)
    c = json.loads(text)
    for key in ("containerPort", "dockerfilePath", "buildDir", "minNum", "maxNum", "cpu", "mem", "envParams"):
        assert key in c, f"{path}: {key} missing"
    assert 1 <= c["containerPort"] <= 61000 and c["containerPort"] != 9100, f"{path}: containerPort"
    assert 1 <= c["minNum"] <= c["maxNum"], f"{path}: minNum must be >= 1 (a payment service never scales to zero)"
    for k, v in c["envParams"].items():
        assert not re.search(r"(API_KEY|SECRET|PASSWORD)$", k) or v == "", f"{path}: {k} must be set in the console, not committed"
    print(f"   {path}: ok")
PY
echo "== deploy/tencent/Dockerfile is deploy/Dockerfile plus the baked configuration"
expected=$(diff <(grep -v '^#' deploy/Dockerfile) <(grep -v '^#' deploy/tencent/Dockerfile) | grep '^[<>]' || true)
want=$'> COPY deploy/tencent/minipay.toml /etc/minipay/minipay.toml\n< CMD ["serve", "all"]\n> CMD ["serve"]'
if [ "$expected" != "$want" ]; then
  echo "deploy/tencent/Dockerfile drifted from deploy/Dockerfile:"; echo "$expected"; exit 1
fi
echo "== deploy checks passed"
