#!/usr/bin/env bash
# Compile-check of `cargo build --release --features cuda` on a machine with no CUDA
# toolkit and no GPU. It only shows that the crate builds and links with CUDA on; it
# does not run anything on a GPU.
#
# What it does:
#  1. `pip download --no-deps` the CUDA 13.0 toolkit wheels from PyPI into
#     WORKDIR/wheels (about 0.7 GB, mostly cuBLAS). CUDA 13 because the CUDA 12
#     `nvidia-cuda-nvcc-cu12` wheels ship only ptxas, not nvcc; the CUDA 13
#     `nvidia-cuda-nvcc` wheel ships nvcc, cudafe++, fatbinary and nvlink, and
#     `nvidia-nvvm` ships cicc; `nvidia-nccl-cu13` 2.32 ships NCCL (cudarc binds the 2.30 API, which 2.32 keeps). 13.0, the first CUDA 13 release, asks the least of
#     the driver (>= 580 at run time); cudarc 0.19.10 knows CUDA 11.4 to 13.4.
#     Unpacked, the toolkit takes about 1.2 GB.
#  2. Unzips them into WORKDIR/unz; the wheels lay out a toolkit at
#     WORKDIR/unz/nvidia/cu13 (bin/nvcc, nvvm/bin/cicc, include/, lib/).
#  3. Adds what the wheels lack: execute bits, unversioned .so links for the linker
#     (libcudart.so, libcublas.so, ...), and lib/stubs/libcuda.so, a stub of the
#     driver library (soname libcuda.so.1; every driver entry point cudarc declares,
#     each returning CUDA_ERROR_STUB_LIBRARY) like the toolkit's own
#     lib/stubs/libcuda.so; the real driver's libcuda.so.1 replaces it at run time.
#  4. Sets the environment the build scripts read and runs
#     `cargo build --release --features cuda` (extra arguments are passed on):
#       CUDA_HOME/CUDA_PATH/CUDA_ROOT  toolkit root (cudarc's link search paths)
#       PATH, NVCC                     nvcc (cudaforge, used by candle-kernels)
#       CUDARC_CUDA_VERSION=13000      CUDA version for cudarc's bindings
#       CUDA_COMPUTE_CAP=90            GPU arch for candle-kernels' PTX (no nvidia-smi
#                                      here); override for another GPU, e.g. 80
#       LD_LIBRARY_PATH                lets the linker find libcublasLt etc.
#
# Usage (from anywhere; it builds the repository it lives in):
#   notebooks/cuda/build_check.sh [WORKDIR] [cargo build args...]
# WORKDIR defaults to /tmp/llmctr-cuda and must lie outside the repository.
# CARGO_TARGET_DIR is honoured. On a machine with a real toolkit and GPU none of this
# is needed: `cargo build --release --features cuda` is enough.
set -euo pipefail

WORK="${1:-/tmp/llmctr-cuda}"
shift || true
mkdir -p "$WORK/wheels" "$WORK/unz"
WORK="$(cd "$WORK" && pwd)"
cd "$(dirname "$0")/../.."   # the repository root

WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
  nvidia-cublas==13.0.2.14
  nvidia-nccl-cu13==2.32.3
)
pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 \
  -d "$WORK/wheels" "${WHEELS[@]}"

for w in "$WORK"/wheels/*.whl; do
  python3 -m zipfile -e "$w" "$WORK/unz"
done
ROOT="$WORK/unz/nvidia/cu13"
chmod +x "$ROOT"/bin/* "$ROOT"/nvvm/bin/*

# Unversioned names for the linker (the wheels carry only the versioned ones).
for so in cudart cublas cublasLt curand nvrtc; do
  real="$(cd "$ROOT/lib" && ls "lib$so.so."* | grep -v alt | head -n 1)"
  ln -sf "$real" "$ROOT/lib/lib$so.so"
done
ln -sfn lib "$ROOT/lib64"
# NCCL (the data-parallel collectives, src/dist/nccl.rs; cudarc binds the NCCL 2.30 API)
# unpacks beside the toolkit, not into it.
NCCL_SO="$(find "$WORK/unz/nvidia" -name 'libnccl.so.2*' | head -n 1)"
ln -sf "$NCCL_SO" "$ROOT/lib/libnccl.so"

# Driver stub: one function per driver entry point cudarc binds, each returning
# CUDA_ERROR_STUB_LIBRARY (34) as NVIDIA's own stub does.
mkdir -p "$ROOT/lib/stubs"
SYS="$(cargo metadata --format-version 1 --features cuda | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "cudarc"))
')"
SYS="$(dirname "$SYS")/src/driver/sys/mod.rs"
grep -oE '^ +fn cu[A-Za-z0-9_]+\(' "$SYS" | sed -E 's/^ +fn //; s/\($//' | sort -u \
  | sed 's/.*/int &(void) { return 34; }/' >"$ROOT/lib/stubs/libcuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib/stubs/libcuda.so" \
  "$ROOT/lib/stubs/libcuda_stub.c"

export CUDA_HOME="$ROOT" CUDA_PATH="$ROOT" CUDA_ROOT="$ROOT"
export PATH="$ROOT/bin:$PATH" NVCC="$ROOT/bin/nvcc"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export LD_LIBRARY_PATH="$ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The same environment for later builds (gpu_check.sh sources it for the tests).
cat >"$WORK/env.sh" <<ENV
export CUDA_HOME="$ROOT" CUDA_PATH="$ROOT" CUDA_ROOT="$ROOT"
export PATH="$ROOT/bin:\$PATH" NVCC="$ROOT/bin/nvcc"
export CUDARC_CUDA_VERSION=13000 CUDA_COMPUTE_CAP="$CUDA_COMPUTE_CAP"
export LD_LIBRARY_PATH="$ROOT/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
nvcc --version | tail -n 2
time cargo build --release --features cuda "$@"
