#!/usr/bin/env bash
# Installs the pinned JS packages (package-lock.json) that the ringserve_text cross-check tests
# compare against. Needs node and npm, and the npm registry.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
