#!/usr/bin/env bash
# The GPU check of gpu_check.sh, for a GPU machine with no Rust toolchain and no
# network: the binaries are built elsewhere and carried in.
#
# Where the toolchain is (any x86-64 Linux machine; no GPU needed):
#   CARGO_TARGET_DIR=/tmp/ct notebooks/cuda/build_check.sh /tmp/llmctr-cuda
#   source /tmp/llmctr-cuda/env.sh
#   CARGO_TARGET_DIR=/tmp/ct cargo test --release --features cuda --test cuda --no-run
#   mkdir -p .gpu && cp /tmp/ct/release/pipeline .gpu/pipeline
#   cp /tmp/ct/release/deps/cuda-<hash> .gpu/cuda-test   # the path cargo printed
#   strip .gpu/*; xz -T2 .gpu/pipeline .gpu/cuda-test      # 145 MB → 21 MB
# Then, on the GPU machine, from the repository root (with .gpu/ beside it):
#   notebooks/cuda/prebuilt_check.sh [MANIFEST_DIR]
# MANIFEST_DIR is the repository path the test binary was compiled in (its
# fixtures are found through it; default /work/main): it is linked to this
# checkout when it does not exist.
#
# It runs (1) tests/cuda.rs: every family fixture's decoder states and a LoRA
# embed run on the GPU against the CPU; (2) `pipeline bench llm` on the GPU and
# on the CPU, on a random checkpoint in SmolLM2-135M's shapes written by
# smollm2_shape.py (PyTorch + transformers; the GGUF is too large to carry).
# The CUDA libraries come from the machine's CUDA 13 Python wheels (nvidia-*)
# or /usr/local/cuda; the driver from the machine. Output: ${OUT:-/tmp}/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp}"
exec > >(tee "$OUT/gpu_check.log") 2>&1
MANIFEST="${1:-/work/main}"
nvidia-smi -L
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"

BIN=/tmp/llmctr-bin
mkdir -p "$BIN"
for f in pipeline cuda-test; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
    ".gpu/$f.xz" "$BIN/$f"
  chmod +x "$BIN/$f"
done

SITE="$(python3 -c 'import site; print(site.getsitepackages()[0])')"
LIBS="$(find "$SITE/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)"
export LD_LIBRARY_PATH="$LIBS:/usr/local/cuda/lib64:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ldd "$BIN/pipeline" | grep -E 'cuda|cublas|curand|nccl|nvrtc' || true

if [ ! -e "$MANIFEST" ]; then
  mkdir -p "$(dirname "$MANIFEST")"
  ln -s "$PWD" "$MANIFEST"
fi
echo "== tests/cuda.rs"
(cd "$MANIFEST" && "$BIN/cuda-test" --nocapture --test-threads 1)

echo "== bench llm (random weights in SmolLM2-135M's shapes, f32)"
python3 notebooks/cuda/smollm2_shape.py /tmp/smol-shape
for d in cuda cpu; do
  "$BIN/pipeline" bench llm --model /tmp/smol-shape --device "$d"
done
