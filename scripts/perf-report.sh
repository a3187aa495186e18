#!/usr/bin/env bash
# Regenerates the performance report: docs/perf/*.json (raw results), docs/perf/*.png (gnuplot
# charts) and the generated tables of docs/performance.md. One command, bounded in time (about
# 35 minutes on a 2-core machine; --quick runs tiny sizes in a few minutes to check the pipeline).
#
#   scripts/perf-report.sh [--quick] [--build-dir DIR] [--out DIR]
#
# --build-dir  build tree to use (configured and built here if needed; default build)
# --out        where performance.md and perf/ are written (default docs; --quick defaults to a
#              temporary directory so quick numbers never land in docs/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=$ROOT/build
OUT=""
QUICK=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--quick] [--build-dir DIR] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z $OUT ]]; then
  if [[ $QUICK == 1 ]]; then OUT=$(mktemp -d /tmp/ringserve-perf-quick.XXXXXX); else OUT=$ROOT/docs; fi
fi
mkdir -p "$OUT/perf"
[[ -f $OUT/performance.md ]] || cp "$ROOT/docs/performance.md" "$OUT/performance.md"
PERF=$OUT/perf
START=$(date +%s)
step() { printf '[perf-report %4ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }

NPROC=$(nproc)
if [[ $QUICK == 1 ]]; then
  PRESET=tiny; SOFTMAX_PRESET=tiny-softmax
  PREFILL_LENGTHS=256,1024; PREFILL_LENGTHS_1T=256,1024; DECODE_CONTEXTS=1024,4096
  DECODE_STEPS=4; ATTN_LENGTHS=1024,2048,4096; ATTN_SOFTMAX_MAX=2048; REPEAT=3
  SERVE_REQUESTS=8; SERVE_INPUT=128; SERVE_OUTPUT=16; MICRO_FILTER='BM_(RmsNorm|MoeRoute)'
else
  PRESET=small; SOFTMAX_PRESET=small-softmax
  PREFILL_LENGTHS=1024,4096,8192; PREFILL_LENGTHS_1T=1024,4096
  DECODE_CONTEXTS=4096,16384,65536,131072; DECODE_STEPS=4
  ATTN_LENGTHS=4096,8192,16384,32768,65536,131072; ATTN_SOFTMAX_MAX=32768; REPEAT=3
  SERVE_REQUESTS=16; SERVE_INPUT=512; SERVE_OUTPUT=64; MICRO_FILTER='.'
fi

step "build ($BUILD_DIR)"
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" -j"$NPROC" --target ringctl ringserve-router ringserve-prefill \
  ringserve-decode ringserve-cpu-bench >/dev/null
BIN=$BUILD_DIR/bin
RINGCTL=$BIN/ringctl

MODELS=$(mktemp -d /tmp/ringserve-perf-models.XXXXXX)
CLUSTER_PID=""
cleanup() {
  if [[ -n $CLUSTER_PID ]] && kill -0 "$CLUSTER_PID" 2>/dev/null; then
    kill -TERM "$CLUSTER_PID"; wait "$CLUSTER_PID" || true
  fi
  rm -rf "$MODELS"
}
trap cleanup EXIT

step "models: $PRESET and $SOFTMAX_PRESET (all-softmax, same shape) in $MODELS"
"$RINGCTL" make-model --preset "$PRESET" --out "$MODELS/hybrid" >/dev/null
"$RINGCTL" make-model --preset "$SOFTMAX_PRESET" --out "$MODELS/softmax" >/dev/null

# bench-engine and bench-attention print progress to stderr and the JSON result to stdout.
engine() {  # engine OUT_NAME ARGS...: one bench-engine run to $PERF/OUT_NAME.json
  local name=$1; shift
  step "bench-engine $name: $*"
  "$RINGCTL" bench-engine --repeat "$REPEAT" --json "$@" >"$PERF/$name.json"
}
# Decode contexts are filled with synthetic values (a step's cost does not depend on them).
engine engine-threads-1 --model "$MODELS/hybrid" --threads 1 --lengths "$PREFILL_LENGTHS_1T" \
  --decode-context 4096 --synthetic-context --batches 1,16 --decode-steps 8
engine "engine-threads-$NPROC" --model "$MODELS/hybrid" --threads "$NPROC" \
  --lengths "$PREFILL_LENGTHS" --decode-context 4096 --synthetic-context --batches 1,16 \
  --decode-steps 8
engine prefill-softmax --model "$MODELS/softmax" --threads "$NPROC" --lengths "$PREFILL_LENGTHS" \
  --batches=
engine decode-context --model "$MODELS/hybrid" --threads "$NPROC" --lengths "" \
  --decode-context "$DECODE_CONTEXTS" --synthetic-context --batches 1,16 \
  --decode-steps "$DECODE_STEPS"

step "bench-attention: $ATTN_LENGTHS (softmax measured up to $ATTN_SOFTMAX_MAX)"
"$RINGCTL" bench-attention --preset "$PRESET" --lengths "$ATTN_LENGTHS" \
  --softmax-max-length "$ATTN_SOFTMAX_MAX" --repeat "$REPEAT" --json >"$PERF/attention.json"

step "micro benchmarks (ringserve-cpu-bench)"
"$BIN/ringserve-cpu-bench" --benchmark_filter="$MICRO_FILTER" --benchmark_min_time=0.2 \
  --benchmark_format=json 2>/dev/null >"$PERF/micro.json"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "serving: cluster up (1 prefill + 1 decode, router on :$PORT)"
CLUSTER_LOG=$MODELS/cluster.log
"$RINGCTL" cluster up --model "$MODELS/hybrid" --prefill 1 --decode 1 --port "$PORT" \
  >"$CLUSTER_LOG" 2>&1 &
CLUSTER_PID=$!
for _ in $(seq 600); do
  grep -q '^cluster up' "$CLUSTER_LOG" && break
  kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$CLUSTER_LOG" >&2; exit 1; }
  sleep 1
done
grep -q '^cluster up' "$CLUSTER_LOG" || { echo "cluster did not start in 10 minutes" >&2; exit 1; }
step "serving: ringctl bench ($SERVE_REQUESTS requests, $SERVE_INPUT in / $SERVE_OUTPUT out)"
"$RINGCTL" bench --router "127.0.0.1:$PORT" --requests "$SERVE_REQUESTS" --warmup 2 \
  --concurrency 4 --input-len "$SERVE_INPUT" --output-len "$SERVE_OUTPUT" \
  --model "$MODELS/hybrid" --json --samples-out "$PERF/serving-samples.json" \
  >"$PERF/serving.json"
kill -TERM "$CLUSTER_PID"; wait "$CLUSTER_PID" || true
CLUSTER_PID=""

step "tables and charts"
python3 "$ROOT/scripts/perf-report.py" --perf "$PERF" --doc "$OUT/performance.md" \
  --threads "$NPROC" --mode "$([[ $QUICK == 1 ]] && echo quick || echo full)"
step "done: $OUT/performance.md, $PERF/"
