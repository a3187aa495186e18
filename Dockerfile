# syntax=docker/dockerfile:1
#
# The ringserve image: ringserve-router, ringserve-prefill, ringserve-decode and ringctl in
# /opt/ringserve/bin, run as the non-root user ringserve (uid/gid 10001), CUDA runtime included.
# One image serves every component; the Helm chart (helm/ringserve) picks the binary.
#
#   docker build -t ringserve:0.1.0 .
#   docker build --build-arg BUILD_JOBS=8 --build-arg CMAKE_ARGS=-DCMAKE_CUDA_ARCHITECTURES=90a -t ringserve:0.1.0 .
#
# The build stage does exactly what a developer does: scripts/setup.sh, then
# `cmake -S . -B build && cmake --build build -j`. nvcc is on the devel image, so the CUDA backend
# and the NCCL transport are built (CMakeLists.txt turns them on when it finds nvcc).

ARG CUDA_VERSION=13.0.0
ARG UBUNTU_VERSION=24.04

############################ build ############################
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
# Extra CMake arguments (none by default, e.g. -DCMAKE_CUDA_ARCHITECTURES=90a).
ARG CMAKE_ARGS=""
# Parallel compile jobs (default: every CPU of the builder).
ARG BUILD_JOBS=""
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src

# The system packages first, in their own layer: it stays cached while only the sources change.
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh && rm -rf /var/lib/apt/lists/*

COPY . .
RUN cmake -S . -B build ${CMAKE_ARGS}
RUN cmake --build build -j"${BUILD_JOBS:-$(nproc)}"

# Stage the binaries and list the Ubuntu packages that own the shared libraries they load: the
# runtime stage installs exactly those (CUDA's own libraries are already in the runtime base;
# libcuda.so.1 comes from the host driver through the NVIDIA container runtime).
RUN set -eu; \
    mkdir -p /out/bin; \
    for b in ringserve-router ringserve-prefill ringserve-decode ringctl; do \
      install -m 0755 "build/bin/$b" /out/bin/; \
    done; \
    ldd /out/bin/* | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do \
      real="$(readlink -f "$lib")"; \
      dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null \
        || dpkg -S "${lib#/usr}" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null \
        || echo "warning: no package owns $lib" >&2; \
    done | grep -v '^diversion' | cut -d: -f1 | tr ',' '\n' | sed 's/^ *//' | sort -u > /out/runtime-packages.txt; \
    echo "runtime packages:"; cat /out/runtime-packages.txt

############################ runtime ############################
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -qq \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y -qq --no-install-recommends \
 && apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --system --gid 10001 ringserve \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/ringserve --create-home \
      --shell /usr/sbin/nologin ringserve

COPY --from=build /out/bin/ /opt/ringserve/bin/
ENV PATH=/opt/ringserve/bin:${PATH}

USER 10001:10001
WORKDIR /home/ringserve
# router gRPC/metrics, prefill gRPC/metrics, decode gRPC/metrics
EXPOSE 50051 9090 50061 9091 50071 9092
# Every component takes its binary as the command (the Helm chart sets it), e.g.
#   docker run --gpus all ringserve:0.1.0 ringserve-prefill --model /models/m --device cuda
CMD ["ringctl", "--help"]
