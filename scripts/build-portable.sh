#!/usr/bin/env bash
# A ragloop binary for image-free PAI jobs (ARCHITECTURE.md, "image-free jobs"): linked against
# glibc 2.17, so it runs in every stock PAI image (Ubuntu 20.04/22.04, CentOS 7) whatever glibc
# built it. Uses cargo-zigbuild (crates.io) with zig from PyPI's `ziglang` wheel; nothing else
# is downloaded. Prints the binary's path; set `[jobs] binary` to it.
#
#   scripts/build-portable.sh            # → target/x86_64-unknown-linux-gnu/release/ragloop
set -euo pipefail
cd "$(dirname "$0")/.."

zig_version=0.17.1
zigbuild_version=0.24.1
target=x86_64-unknown-linux-gnu
venv=target/zig-venv

if [ ! -f "$venv/ziglang-$zig_version" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "ziglang==$zig_version"
    touch "$venv/ziglang-$zig_version"
fi
if ! cargo zigbuild --version 2>/dev/null | grep -q "$zigbuild_version"; then
    cargo install --locked cargo-zigbuild --version "$zigbuild_version"
fi
# cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH: the venv's python first.
PATH="$PWD/$venv/bin:$PATH" cargo zigbuild --release --locked -p ragloop --bin ragloop \
    --target "$target.2.17" >&2
echo "target/$target/release/ragloop"
