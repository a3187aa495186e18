#!/usr/bin/env bash
# Sets up a fresh machine, builds, and runs every test except the GPU ones (label gpu) and the GPU
# bundle check (label bundle: an nvcc build and a download; README, "GPU check"); then the
# unit suites under ASan + UBSan and every fuzz target for a bounded time (scripts/sanitize.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/build.sh
ctest --test-dir build -LE 'gpu|bundle' --output-on-failure --timeout 1800
bash scripts/sanitize.sh
