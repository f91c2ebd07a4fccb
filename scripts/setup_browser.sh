#!/usr/bin/env bash
# Browser-test tooling: Debian's Chromium, a Chinese font for it, and the Python playwright
# package that drives it. playwright's wheel carries its own driver; no browser is downloaded:
# the tests launch /usr/bin/chromium through executable_path (never `playwright install`).
# Safe to run again; works as root without a terminal (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
playwright_version="1.65.2"
if [ "${PEITU_SETUP_RUNTIME_ONLY:-0}" = 1 ]; then
  exit 0  # the Docker image: no browser-test tooling
fi

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Without a CJK font the Chinese page renders as boxes in screenshots.
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup_browser.sh: no .venv here; run scripts/setup.sh first" >&2
  exit 1
fi
installed=$(.venv/bin/python -c \
  'from importlib.metadata import version; print(version("playwright"))' 2>/dev/null || true)
if [ "$installed" != "$playwright_version" ]; then
  .venv/bin/pip install --quiet "playwright==$playwright_version"
fi
echo "browser tests: $(/usr/bin/chromium --version 2>/dev/null), playwright $playwright_version"
