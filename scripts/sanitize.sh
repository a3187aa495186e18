#!/usr/bin/env bash
# Builds the unit suites (CTest label `unit`) and the libFuzzer targets (label `fuzz`, in
# tests/fuzz) with clang, AddressSanitizer and UBSan in build-san, then runs the unit suites and
# each fuzz target for RINGSERVE_FUZZ_SECONDS seconds (default 20) over its seed corpus.
# Any sanitizer report, crash, leak, timeout or failed check fails the run. Needs clang and
# libclang-rt-14-dev (scripts/setup.sh installs them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${RINGSERVE_SAN_BUILD:-build-san}"
JOBS="${JOBS:-$(nproc)}"
FUZZ_SECONDS="${RINGSERVE_FUZZ_SECONDS:-20}"

CC="${SAN_CC:-clang}" CXX="${SAN_CXX:-clang++}" cmake -S . -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" \
  -DRINGSERVE_SANITIZE=ON -DRINGSERVE_FUZZ=ON -DRINGSERVE_CUDA=OFF \
  -DRINGSERVE_FUZZ_SECONDS="$FUZZ_SECONDS"
# Only the unit suites and the fuzzers: no servers, no cluster tests.
cmake --build "$BUILD" -j"$JOBS" --target unit_tests fuzz_targets

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:check_initialization_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# Skipped under the sanitizers (the normal run has it): a 128K-token prefill, minutes under ASan.
export GTEST_FILTER="${GTEST_FILTER:--ModelTest.PrefillsA128KPrompt}"
ctest --test-dir "$BUILD" -L 'unit|fuzz' -LE gpu -j"$JOBS" --output-on-failure --timeout 900
