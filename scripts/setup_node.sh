#!/usr/bin/env bash
# Install the npm packages of the local WeChat test gateway (tests/wechat/gateway).
# Idempotent: skips the install when node_modules was built from the same package.json and
# package-lock.json (a stamp file records their checksum). Use --force to reinstall anyway.
set -euo pipefail
cd "$(dirname "$0")/../tests/wechat/gateway"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup_node: node and npm are needed (Node 20 works); install them first" >&2
  exit 1
fi

stamp=node_modules/.peitu-install-stamp
wanted=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ "${1:-}" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] \
  && [ -d node_modules/wechaty-puppet-mock ] && [ -d node_modules/wechaty-puppet-service ]; then
  echo "setup_node: tests/wechat/gateway/node_modules is up to date"
  exit 0
fi

# Not `npm ci`: the lock file lacks the optional @swc/core entries and `npm ci` refuses it.
npm install --no-audit --no-fund --loglevel=error
echo "$wanted" >"$stamp"
echo "setup_node: gateway packages installed in tests/wechat/gateway/node_modules"
