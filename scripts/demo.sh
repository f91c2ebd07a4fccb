#!/usr/bin/env bash
# The main job, offline, on nothing but this repository: the ten sample photos in
# samples/photos (scripts/fetch_samples.sh, freely licensed) are described by the offline
# describer (no vision model, no API key), embedded with models/m3e-small, and a few Chinese
# posts get their photos. Data goes to ./data/demo; the photos are read in place.
#   bash scripts/demo.sh                    # the built-in posts
#   bash scripts/demo.sh "今天的咖啡真香"     # your own post
# Where ../shared/eval exists (the developers' evaluation set) it also indexes those 2,009
# photos with their human-written captions into ./data/demo-eval and asks them the same posts
# (PEITU_DEMO_EVAL=0 skips that).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
export PEITU_EMBEDDING__MODEL=${PEITU_EMBEDDING__MODEL:-models/m3e-small}
export PEITU_RERANK__ENABLED=${PEITU_RERANK__ENABLED:-false}   # no LLM offline: vector order
peitu=.venv/bin/peitu
if [ $# -gt 0 ]; then
  posts=("$@")
else
  posts=("周一早上，来杯浓缩咖啡续命" "家里的猫主子又在发呆" "去颐和园逛了一圈，湖边的古建筑真好看" "春天到了，小雏菊开了")
fi
say() { printf '\n== %s\n' "$*"; }

bash scripts/fetch_samples.sh
say "索引示例照片（samples/photos，10 张，离线描述，不需要 API key）"
export PEITU_DATA_DIR=data/demo PEITU_LIBRARY=samples/photos
mkdir -p "$PEITU_DATA_DIR"
"$peitu" index --describer offline
for post in "${posts[@]}"; do
  say "配图：$post"
  "$peitu" recommend "$post" --top-k 3
done

eval_dir=${PEITU_EVAL_DIR:-../shared/eval}
if [ "${PEITU_DEMO_EVAL:-1}" != 0 ] && [ -f "$eval_dir/captions.jsonl" ]; then
  say "另外发现评测集 $eval_dir：用人工中文描述索引 2,009 张照片（data/demo-eval）"
  export PEITU_DATA_DIR=data/demo-eval PEITU_LIBRARY="$eval_dir/images"
  mkdir -p "$PEITU_DATA_DIR"
  sidecar="$PEITU_DATA_DIR/descriptions.jsonl"
  .venv/bin/python - "$eval_dir/captions.jsonl" "$sidecar" <<'PY'
import json, pathlib, sys
out = []
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    if r.get("captions_zh"):
        out.append(json.dumps({"image": pathlib.Path(r["image"]).name,
                               "description": "".join(r["captions_zh"][:4])}, ensure_ascii=False))
pathlib.Path(sys.argv[2]).write_text("\n".join(out) + "\n", encoding="utf-8")
PY
  # Exit code 3 = some photos could not be described: the 9 package sample photos in the eval
  # set have no Chinese captions, so they are reported as failed and left out.
  "$peitu" index --descriptions "$sidecar" || [ $? -eq 3 ]
  for post in "${posts[@]}"; do
    say "配图（评测集）：$post"
    "$peitu" recommend "$post" --top-k 3
  done
fi
