#!/usr/bin/env bash
# The Helm chart tests: installs their tools if needed (install.sh), then runs every
# tests/helm/*.test.mjs with node's test runner. Exits non-zero when a test fails.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/install.sh"
# Helm keeps caches and config under $HOME; keep them out of the user's and CI's home.
export HELM_CACHE_HOME="${HELM_CACHE_HOME:-$HERE/.bin/cache}"
export HELM_CONFIG_HOME="${HELM_CONFIG_HOME:-$HERE/.bin/config}"
export HELM_DATA_HOME="${HELM_DATA_HOME:-$HERE/.bin/data}"
cd "$HERE"
exec node --test "$@" ./*.test.mjs
