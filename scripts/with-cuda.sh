#!/usr/bin/env bash
# Runs a command with the CUDA toolkit that building `--features cuda` needs (candle's kernels
# are compiled to PTX by nvcc at build time; cudarc reads the toolkit's version from nvcc), taken
# from NVIDIA's wheels on PyPI, pinned, into target/cuda-venv. A machine with its own toolkit
# (nvcc on PATH) is used as it is.
#
#   scripts/with-cuda.sh cargo build --release -p ragloop --features cuda
#
# CUDA_COMPUTE_CAP: the GPU generation to compile for; read from nvidia-smi when it runs,
# else 86 (the A10 of the bundled cloud configuration's ecs.gn7i GPU nodes; PTX of an older
# generation runs on newer GPUs through the driver's JIT).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvcc >/dev/null 2>&1; then
    venv=target/cuda-venv
    if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.ragloop-cuda-13.4" ]; then
        python3 -m venv "$venv"
        # cudarc 0.19 knows CUDA up to 13.4: newer nvcc releases are refused by its build.
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "nvidia-cuda-nvcc==13.4.92" "nvidia-cuda-runtime==13.4.92" \
            "nvidia-cuda-crt==13.4.92" "nvidia-nvvm==13.4.92" "nvidia-cuda-cccl==13.3.5.0.6"
        touch "$venv/.ragloop-cuda-13.4"
    fi
    cuda=$(cd "$venv" && echo "$PWD"/lib/python3*/site-packages/nvidia/cu13)
    export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda"
fi
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
    else
        CUDA_COMPUTE_CAP=86
    fi
fi
export CUDA_COMPUTE_CAP
exec "$@"
