#!/usr/bin/env bash
# Configures and builds everything into build/ (CUDA too when nvcc is found). Extra arguments go
# to cmake's configure step, e.g. -DRINGSERVE_CUDA=OFF.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$(nproc)"
