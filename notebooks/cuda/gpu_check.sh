#!/usr/bin/env bash
# GPU check, on a machine with an NVIDIA GPU and its driver:
#  1. builds `--features cuda` (with the machine's CUDA toolkit when nvcc is on
#     PATH, else through build_check.sh's toolkit from PyPI wheels);
#  2. `cargo test --release --features cuda --test cuda`: the decoder's states on
#     the GPU against the CPU for every family fixture, and an embed run (LoRA)
#     on the GPU against the same run on the CPU (tests/cuda.rs);
#  3. `pipeline bench llm --device cuda` and `--device cpu` when
#     data/models/SmolLM2-135M-Instruct.Q4_1.gguf is there (fetch it first with
#     `pipeline data fetch smollm2`; the bench needs the real model).
# Everything it prints goes to ${OUT:-/tmp/llmctr-gpu}/gpu_check.log; the
# figures belong in docs/benchmarks.md with the GPU's name (nvidia-smi -L).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/llmctr-gpu}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
nvidia-smi -L || { echo "no NVIDIA GPU visible (nvidia-smi failed)"; exit 1; }
if command -v nvcc >/dev/null; then
  cargo build --release --features cuda
  cargo test --release --features cuda --test cuda -- --nocapture
else
  notebooks/cuda/build_check.sh "${CUDA_WORK:-/tmp/llmctr-cuda}"
  # build_check.sh leaves its environment in env.sh for the test build.
  # shellcheck disable=SC1091
  source "${CUDA_WORK:-/tmp/llmctr-cuda}/env.sh"
  cargo test --release --features cuda --test cuda -- --nocapture
fi
if [ -f data/models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  for d in cuda cpu; do
    ./target/release/pipeline bench llm --device "$d"
  done
else
  echo "no data/models/SmolLM2-135M-Instruct.Q4_1.gguf: bench llm skipped"
fi
