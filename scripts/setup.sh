#!/usr/bin/env bash
# Installs every build and test dependency of ringserve from Debian packages (and npm for the
# chart and tokenizer cross-checks). Idempotent; needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake pkg-config git ca-certificates \
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
  libgtest-dev libgmock-dev libbenchmark-dev \
  libopenblas-dev libxxhash-dev libonig-dev libicu-dev nlohmann-json3-dev prometheus-cpp-dev \
  openssl gnuplot-nox unzip clang libclang-rt-14-dev python3
# Node.js for the JavaScript cross-checks; machines that ship their own node keep it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi

# JavaScript references for the cross-check tests (pinned by package-lock.json).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tests/common/text/npm/install.sh"
bash "$ROOT/tests/helm/install.sh"
