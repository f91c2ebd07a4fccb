#!/usr/bin/env bash
# schemathesis over the server's own OpenAPI schema, against a disposable data folder:
# a fresh library of made photos (or a copy of the library $2, which is never touched), the
# offline m3e-small embedder, the fake OpenAI-compatible server as the vision model, rerank off.
# All checks; examples per operation from $1 (300). Its stateful phase deletes the files it
# uploads: the server only ever sees the temporary copy, and the script refuses to start when
# the settings would give it any other library (tests/support/temp_library.py).
# Exit code: schemathesis's (0 = no server error, no schema mismatch); 2 when refused.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${1:-300}"
SOURCE="${2:-}"
WORK="$(mktemp -d)"
TOKEN="schemathesis-token-0123456789"
cleanup() {
  for pid in ${SERVER_PID:-} ${FAKE_PID:-}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

.venv/bin/python -m tests.support.temp_library copy "$WORK" "$SOURCE"

FAKE_PORT="$(free_port)"
.venv/bin/python -m tests.support.openai_server --port "$FAKE_PORT" >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
PORT="$(free_port)"
export HF_HUB_OFFLINE=1 PEITU_EMBEDDING__MODEL=models/m3e-small PEITU_DATA_DIR="$WORK/data" \
  PEITU_LIBRARY="$WORK/library" PEITU_ADMIN_TOKEN="$TOKEN" PEITU_RERANK__ENABLED=false \
  PEITU_VISION__BASE_URL="http://127.0.0.1:$FAKE_PORT/v1" PEITU_VISION__MODEL=fake-vl \
  PEITU_VISION__TIMEOUT_S=10 PEITU_VISION__MAX_RETRIES=0
.venv/bin/python -m tests.support.temp_library check "$WORK"  # exits 2 on anything else
.venv/bin/python -m cli.main serve --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
.venv/bin/python - "$PORT" "$TOKEN" <<'PY'
import sys, time, httpx
url, token = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2]
for _ in range(480):  # the embedding model loads first
    try:
        if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
else:
    sys.exit("the server did not become ready")
httpx.post(f"{url}/api/index/jobs", headers={"Authorization": f"Bearer {token}"}).raise_for_status()
PY

status=0
.venv/bin/schemathesis run "http://127.0.0.1:$PORT/openapi.json" \
  --checks all --max-examples "$EXAMPLES" --header "Authorization: Bearer $TOKEN" \
  --request-timeout 60 --workers 1 --seed 11 || status=$?
if grep -q "Traceback" "$WORK/server.log"; then
  echo "the server logged a traceback:" >&2
  grep -n -A20 "Traceback" "$WORK/server.log" | head -60 >&2
  status=1
fi
exit "$status"
