# syntax=docker/dockerfile:1
#
# The ringserve image for machines with a container engine and a registry; scripts/build-image
# builds the same content without either (docs/helm.md). ringserve-router, ringserve-prefill,
# ringserve-decode and ringctl in /opt/ringserve/bin, run as the non-root user ringserve
# (uid/gid 10001); one image serves every component, the Helm chart picks the binary.
#
# The CPU image (what `scripts/build-image` builds, on Debian 12):
#   docker build -t ringserve/ringserve:0.1.0 .
# The CUDA image (what `scripts/build-image --cuda` builds; here on NVIDIA's CUDA images, whose
# runtime stage carries cudart, cuBLAS and NCCL; scripts/setup.sh knows Ubuntu 24.04's names):
#   docker build -t ringserve/ringserve:0.1.0-cuda \
#     --build-arg BUILD_IMAGE=nvidia/cuda:13.0.0-devel-ubuntu24.04 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04 \
#     --build-arg CMAKE_ARGS="-DRINGSERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a" .

ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

############################ build ############################
FROM ${BUILD_IMAGE} AS build
# Extra CMake arguments.
ARG CMAKE_ARGS="-DRINGSERVE_CUDA=OFF"
# Parallel compile jobs (default: every CPU of the builder).
ARG BUILD_JOBS=""
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src

# The system packages first, in their own layer: it stays cached while only the sources change.
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh --build-only && rm -rf /var/lib/apt/lists/*

COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DRINGSERVE_CPU_ARCH=x86-64-v3 \
          ${CMAKE_ARGS}
RUN cmake --build build -j"${BUILD_JOBS:-$(nproc)}" \
      --target ringserve-router ringserve-prefill ringserve-decode ringctl

# Stage the binaries and list the packages that own the shared libraries they load: the runtime
# stage installs exactly those.
RUN install -d /out/bin \
 && install -m 0755 -s build/bin/ringserve-router build/bin/ringserve-prefill \
      build/bin/ringserve-decode build/bin/ringctl /out/bin/ \
 && bash scripts/image-runtime-deps /out/bin/* | tee /out/runtime-deps.txt

############################ runtime ############################
FROM ${RUNTIME_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-deps.txt /tmp/runtime-deps.txt
RUN apt-get update -qq \
 && awk '$1 == "package" {print $2}' /tmp/runtime-deps.txt \
      | xargs apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-deps.txt \
 && groupadd --gid 10001 ringserve \
 && useradd --uid 10001 --gid 10001 --home-dir /home/ringserve --create-home \
      --shell /usr/sbin/nologin ringserve

COPY --from=build /out/bin/ /opt/ringserve/bin/
ENV PATH=/opt/ringserve/bin:${PATH}

USER 10001:10001
WORKDIR /home/ringserve
# router gRPC/metrics, prefill gRPC/metrics, decode gRPC/metrics
EXPOSE 50051 9090 50061 9091 50071 9092
# Every component takes its binary as the command (the Helm chart sets it), e.g.
#   docker run ringserve/ringserve:0.1.0 ringserve-prefill --model /models/m --device cpu
CMD ["ringctl", "--help"]
