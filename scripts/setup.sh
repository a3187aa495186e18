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
  libopenblas-dev libxxhash-dev libonig-dev nlohmann-json3-dev prometheus-cpp-dev \
  openssl nodejs npm gnuplot-nox unzip
