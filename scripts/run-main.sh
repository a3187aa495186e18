#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, write the default model, start a local cluster
# (router + 2 prefill + 1 decode workers on loopback), stream a long prompt through it with a
# prefill progress bar, the generated text and the timing breakdown, then stop the cluster.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-50051}"
bash scripts/setup.sh
bash scripts/build.sh
MODEL=models/tiny
[ -f "$MODEL/config.json" ] || build/bin/ringctl make-model --preset tiny --out "$MODEL"

# Each process logs to a file of its own; the terminal shows the cluster's summary lines.
LOGS=$(mktemp -d -t ringserve-logs-XXXXXX)
echo "cluster logs: $LOGS"
build/bin/ringctl cluster up --model "$MODEL" --prefill 2 --decode 1 --port "$PORT" \
  --log-dir "$LOGS" &
CLUSTER=$!
trap 'kill -TERM $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null || true; echo "cluster logs: $LOGS"' EXIT
for _ in $(seq 1 600); do
  build/bin/ringctl status --router "127.0.0.1:$PORT" >/dev/null 2>&1 && break
  kill -0 $CLUSTER 2>/dev/null || { echo "the cluster did not start (logs: $LOGS)" >&2; exit 1; }
  sleep 0.2
done
build/bin/ringctl status --router "127.0.0.1:$PORT"

# A long prompt: a license text repeated to tens of thousands of tokens.
PROMPT=$(mktemp)
for _ in 1 2 3 4; do cat /usr/share/common-licenses/GPL-3; done > "$PROMPT"
echo "prompt: $(build/bin/ringctl tokenize --model "$MODEL" --file "$PROMPT" | tr ',' '\n' | wc -l) tokens"
build/bin/ringctl generate --router "127.0.0.1:$PORT" --prompt-file "$PROMPT" --max-tokens 48 \
  --temperature 0.8 --seed 7
rm -f "$PROMPT"
