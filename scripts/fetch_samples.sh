#!/usr/bin/env bash
# The demo's sample library in samples/photos: ten freely licensed photos (public domain, CC0,
# CC BY 2.0; sources and licences in samples/README.md) taken out of two PyPI wheels, never
# installed: scikit-image 0.26.0 (its data folder, ~13.7 MB download, taken with `pip download`
# for one fixed platform so every machine gets the same file) and scikit-learn (already in
# .venv as a dependency of sentence-transformers). Each photo is checked against its SHA-256.
# About 3.4 MB kept. Skips when all ten are there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=samples/photos
sums=$(cat <<'SUMS'
88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5  astronaut.png
b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a  camera.png
596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb  chelsea.png
cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7  coffee.png
c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c  rocket.jpg
3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4  hubble_deep_field.jpg
f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba  coins.png
f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955  clock_motion.png
8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29  china.jpg
a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638  flower.jpg
SUMS
)
if [ -d "$dest" ] && (cd "$dest" && sha256sum --check --quiet --status) <<<"$sums"; then
  exit 0
fi
python=.venv/bin/python
[ -x "$python" ] || python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
  --python-version 3.11 --implementation cp --abi cp311 -d "$tmp" "scikit-image==0.26.0"
mkdir -p "$tmp/photos"
"$python" - "$tmp" <<'PY'
import glob, importlib.util, pathlib, shutil, sys, zipfile
tmp = pathlib.Path(sys.argv[1])
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/scikit_image-*.whl")[0])
for name in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg",
             "hubble_deep_field.jpg", "coins.png", "clock_motion.png"):
    (tmp / "photos" / name).write_bytes(wheel.read(f"skimage/data/{name}"))
spec = importlib.util.find_spec("sklearn")
if spec is None or spec.origin is None:
    sys.exit("fetch_samples.sh: scikit-learn is not installed here (run scripts/setup.sh first)")
images = pathlib.Path(spec.origin).parent / "datasets" / "images"
for name in ("china.jpg", "flower.jpg"):
    shutil.copyfile(images / name, tmp / "photos" / name)
PY
(cd "$tmp/photos" && sha256sum --check --quiet) <<<"$sums"
mkdir -p "$dest"
for photo in "$tmp"/photos/*; do
  cp "$photo" "$dest/.$(basename "$photo").part"
  mv "$dest/.$(basename "$photo").part" "$dest/$(basename "$photo")"
done
echo "sample photos -> $dest (10, sources and licences in samples/README.md)"
