#!/usr/bin/env bash
# Starts the control plane and Envoy on the embedded defaults, waits until the gateway answers,
# and prints how to use it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${TOLLGATE_DATA_DIR:-.tollgate}
GATEWAY_PORT=${TOLLGATE_GATEWAY_PORT:-8080}
HTTP_PORT=${TOLLGATE_HTTP_PORT:-8081}
INTERNAL_PORT=${TOLLGATE_INTERNAL_PORT:-8082}
GRPC_PORT=${TOLLGATE_GRPC_PORT:-8083}
XDS_PORT=${TOLLGATE_XDS_PORT:-18000}
ENVOY_ADMIN_PORT=${TOLLGATE_ENVOY_ADMIN_PORT:-9901}
CONFIG=${TOLLGATE_CONFIG:-config/tollgate.yaml}
mkdir -p "$DATA"
chmod 700 "$DATA"

# The token Envoy's provider filter presents to fetch provider credentials.
if [ ! -s "$DATA/data-plane-token" ]; then
  (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_hex(32))' > "$DATA/data-plane-token")
fi
export TOLLGATE_DATA_PLANE_TOKEN
TOLLGATE_DATA_PLANE_TOKEN=$(cat "$DATA/data-plane-token")

# TLS on the client listener (the same port also serves plain HTTP). A self-signed pair for
# local use; put your own with TOLLGATE_TLS_CERT_FILE / TOLLGATE_TLS_KEY_FILE.
TLS_CERT=${TOLLGATE_TLS_CERT_FILE:-$DATA/tls/cert.pem}
TLS_KEY=${TOLLGATE_TLS_KEY_FILE:-$DATA/tls/key.pem}
if [ ! -s "$TLS_CERT" ]; then
  echo "==> generating a self-signed TLS certificate for localhost ($TLS_CERT)"
  mkdir -p "$(dirname "$TLS_CERT")"
  (umask 077; openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$TLS_KEY" -out "$TLS_CERT" 2>/dev/null)
fi

# First start: mint the admin key here, hand it to the control plane (which stores only its
# hash), and show it once.
ADMIN_KEY=""
if [ ! -e "$DATA/tollgate.db" ]; then
  ADMIN_KEY="tg-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')"
fi

pids=()
cleanup() {
  echo
  echo "==> stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "==> starting the control plane (log: $DATA/control-plane.log)"
TOLLGATE_ADMIN_KEY="$ADMIN_KEY" target/release/tollgate serve \
  --config "$CONFIG" --data-dir "$DATA" \
  --xds-addr "127.0.0.1:$XDS_PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
  --internal-addr "127.0.0.1:$INTERNAL_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" \
  --gateway-port "$GATEWAY_PORT" --envoy-admin-port "$ENVOY_ADMIN_PORT" --wasm-dir target/wasm32-wasip1/release \
  --tls-cert-file "$TLS_CERT" --tls-key-file "$TLS_KEY" \
  >"$DATA/control-plane.out" 2>"$DATA/control-plane.log" &
pids+=($!)

for _ in $(seq 1 100); do
  grep -q '^READY' "$DATA/control-plane.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "control plane exited:"; tail -20 "$DATA/control-plane.log"; exit 1; }
  sleep 0.1
done

scripts/render-bootstrap.py envoy/bootstrap.yaml NODE_ID="tollgate-$(hostname)" \
  XDS_HOST=127.0.0.1 XDS_PORT="$XDS_PORT" CP_HTTP_HOST=127.0.0.1 CP_HTTP_PORT="$HTTP_PORT" \
  CP_INTERNAL_HOST=127.0.0.1 CP_INTERNAL_PORT="$INTERNAL_PORT" ADMIN_PORT="$ENVOY_ADMIN_PORT" \
  WASM_DIR="$(pwd)/target/wasm32-wasip1/release" > "$DATA/envoy-bootstrap.yaml"
echo "==> starting Envoy (log: $DATA/envoy.log)"
.venv/bin/envoy -c "$DATA/envoy-bootstrap.yaml" --concurrency 2 --use-dynamic-base-id --log-level warn \
  >"$DATA/envoy.log" 2>&1 &
pids+=($!)

echo -n "==> waiting for the gateway"
for _ in $(seq 1 150); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GATEWAY_PORT/v1/models" || true)
  [ "$code" = "401" ] && break
  kill -0 "${pids[1]}" 2>/dev/null || { echo; echo "Envoy exited:"; tail -20 "$DATA/envoy.log"; exit 1; }
  echo -n "."
  sleep 0.2
done
echo

KEY_SHOWN=${ADMIN_KEY:-<your admin key>}
cat <<MSG

Tollgate is up.
  Gateway (OpenAI-compatible):  http://127.0.0.1:$GATEWAY_PORT/v1   (also https:// on the same port)
  Anthropic-compatible:         http://127.0.0.1:$GATEWAY_PORT/v1/messages
  Bedrock-runtime-compatible:   https://localhost:$GATEWAY_PORT/bedrock   (boto3 endpoint_url)
  Admin API:                    http://127.0.0.1:$HTTP_PORT/admin/v1
  Admin API over gRPC:          127.0.0.1:$GRPC_PORT (tollgate.admin.v1.AdminService, reflection on)
  Envoy admin (loopback only):  http://127.0.0.1:$ENVOY_ADMIN_PORT
MSG
if [ -n "$ADMIN_KEY" ]; then
  cat <<MSG

  Admin key (shown once; only its hash is stored):
    $ADMIN_KEY
MSG
else
  echo
  echo "  Use the admin key shown on the first start (delete $DATA/ to start afresh)."
fi
cat <<MSG

Try it:
  curl http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions \\
    -H "Authorization: Bearer $KEY_SHOWN" -H "Content-Type: application/json" \\
    -d '{"model": "tollgate-demo", "messages": [{"role": "user", "content": "Hello"}]}'

boto3 (bedrock-runtime) through the gateway, trusting the local certificate:
  AWS_BEARER_TOKEN_BEDROCK=$KEY_SHOWN AWS_CA_BUNDLE=$TLS_CERT .venv/bin/python -c "import boto3; \\
    c = boto3.client('bedrock-runtime', region_name='us-east-1', endpoint_url='https://localhost:$GATEWAY_PORT/bedrock'); \\
    print(c.converse(modelId='tollgate-demo', messages=[{'role': 'user', 'content': [{'text': 'Hello'}]}])['output'])"

Create a key for a user:
  curl -X POST http://127.0.0.1:$HTTP_PORT/admin/v1/keys -H "Authorization: Bearer $KEY_SHOWN" \\
    -d '{"name": "alice", "models": ["tollgate-demo"]}'

Ctrl-C stops the gateway.
MSG
wait -n "${pids[@]}" || true
echo "a process exited; see $DATA/control-plane.log and $DATA/envoy.log"
