#!/usr/bin/env bash
# The GPU checks in one run, on a machine with an NVIDIA GPU, its driver, Rust and
# sentence-transformers (torch with CUDA):
#   1. build embed-runtime with `--features cuda` (nvcc from the machine, else from PyPI's
#      wheels: scripts/with-cuda.sh);
#   2. the CUDA parity tests (embed-runtime/tests/cuda.rs): vectors on the GPU against
#      sentence-transformers' fixture and against the CPU for every model family, a fine-tune's
#      steps on the GPU against the CPU's;
#   3. the embedding bench: the 1,100 man pages on the GPU, ours against sentence-transformers
#      on the same GPU (docs/s, p50 latency of one query, peak RSS);
#   4. 50 training steps, ours against sentence-transformers' `fit` on the same GPU (s/step).
# Prints everything and, with WRITE=1, fills BENCHMARKS.md's GPU sections. The model is
# all-MiniLM-L6-v2 (scripts/fetch-model.sh, or RAGLOOP_TEST_MODEL / --model for another copy).
#
#   RAGLOOP_REF_PYTHON=python3 WRITE=1 scripts/gpu/verify.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

py=${RAGLOOP_REF_PYTHON:-python3}
write=()
if [ "${WRITE:-0}" = 1 ]; then write=(--write); fi
cuda() { scripts/with-cuda.sh "$@"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
[ -f models/all-MiniLM-L6-v2/model.safetensors ] || [ -n "${RAGLOOP_TEST_MODEL:-}" ] ||
    bash scripts/fetch-model.sh

echo "== build (--features cuda)"
cuda cargo build --release -p embed-runtime --features cuda --tests --benches

echo "== parity on CUDA"
cuda cargo test --release -p embed-runtime --features cuda --test cuda -- --test-threads 1
# The CPU paths with the feature on: the same results as the default build.
cuda cargo test --release -p embed-runtime --features cuda --lib

echo "== embedding bench (GPU)"
cuda cargo bench -p embed-runtime --features cuda --bench embed -- \
    --device cuda --python "$py" --threads "$(nproc)" "${write[@]}"

echo "== 50 training steps (GPU)"
cuda cargo bench -p embed-runtime --features cuda --bench train -- \
    --device cuda --python "$py" --steps 50 "${write[@]}"
