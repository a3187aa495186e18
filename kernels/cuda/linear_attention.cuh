#pragma once

// Linear attention (simple GLA) on the GPU, fp32 throughout with an fp32 state.
// Prefill: the chunked-parallel form (64-token chunks) per (head, segment). A long sequence is
// cut into `segments` so that heads x segments fills the GPU: phase A computes each segment's
// local state from zero, phase B scans them across segments (giving each segment's incoming
// state and the final state), phase C runs the chunked recurrence of every segment from its
// incoming state and writes the outputs. With one segment only phase C runs.
// References: cpu::LinearAttentionHead and cpu::LinearDecodeHead.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace ringserve::kernels::cuda {

constexpr int64_t kLinearChunk = 64;

struct LinearPrefillParams {
  LinearAttentionParams attn;  // device pointers; attn.block is ignored (64-token chunks)
  int64_t segments = 1;        // from PlanLinearPrefill
  int64_t segment_tokens = 0;  // tokens per segment (a multiple of 64; the last may be short)
  float* workspace = nullptr;  // [heads, segments, D, D] fp32 when segments > 1
};

// Fills segments, segment_tokens for a GPU with `sm_count` SMs and returns the workspace bytes.
size_t PlanLinearPrefill(LinearPrefillParams* p, int sm_count);
bool CanImplement(const LinearPrefillParams& p);
// Sets the kernels' shared-memory limits; call once per device before Launch.
cudaError_t InitLinearPrefillKernels();
cudaError_t Launch(const LinearPrefillParams& p, cudaStream_t stream);

// One decode step (LinearDecodeParams, device pointers: p.states is a device array of device
// pointers, each 16-byte aligned). One block per (head, sequence).
bool CanImplement(const LinearDecodeParams& p);
cudaError_t Launch(const LinearDecodeParams& p, cudaStream_t stream);

}  // namespace ringserve::kernels::cuda
