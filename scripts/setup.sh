#!/usr/bin/env bash
# Installs the dependencies of ringserve from the distribution's packages (and npm for the chart
# and tokenizer cross-checks). Works on Debian 12 and Ubuntu 24.04: the package names are the same
# on both except the clang runtime, whose version follows the release's clang. Idempotent; needs
# root (or sudo).
#
#   scripts/setup.sh               everything: build, tests, benchmarks' plots, chart tests
#   scripts/setup.sh --build-only  only what building the binaries needs (the image build stage)
set -euo pipefail
BUILD_ONLY=0
case "${1:-}" in
  "") ;;
  --build-only) BUILD_ONLY=1 ;;
  *) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
esac
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
apt_install() { $SUDO apt-get install -y -qq --no-install-recommends "$@"; }

$SUDO apt-get update -qq
# Compilers, CMake and the libraries every target links.
apt_install build-essential cmake pkg-config ca-certificates \
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
  libbenchmark-dev libopenblas-dev libxxhash-dev libonig-dev libicu-dev nlohmann-json3-dev \
  prometheus-cpp-dev
if [ "$BUILD_ONLY" = 1 ]; then exit 0; fi

# Tests, sanitizers and fuzzing (clang with its runtime: libclang-rt-14-dev on Debian 12,
# libclang-rt-18-dev on Ubuntu 24.04), the perf report's plots.
apt_install git libgtest-dev libgmock-dev openssl gnuplot-nox unzip python3 clang
apt_install "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
# Node.js for the JavaScript cross-checks; machines that ship their own node keep it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi

# JavaScript references for the cross-check tests (pinned by package-lock.json).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tests/common/text/npm/install.sh"
bash "$ROOT/tests/helm/install.sh"
