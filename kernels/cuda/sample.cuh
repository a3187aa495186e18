#pragma once

// Token sampling on the GPU with cpu::SampleRow's rules: greedy rows take the first maximum;
// other rows rank the vocabulary by (weight desc, index asc) with one stable device-wide radix
// sort of (row, logit) keys, then one block per row applies min-p, top-k and top-p and draws
// SampleUniform(seed, position) over the kept weights (fp64 like the CPU). The candidate order
// and every cutoff match the CPU; the fp64 sums are taken in tree order rather than the CPU's
// sequential order, so a draw can differ only when it falls within ~1e-12 of a boundary.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace ringserve::kernels::cuda {

struct SampleCudaParams {
  const float* logits;  // [rows, vocab], fp32
  int64_t rows;
  int64_t vocab;
  const SamplingParams* params;  // [rows], device-readable
  const int32_t* sample_rows;    // [n_sample] rows that are not greedy, device-readable
  int64_t n_sample;
  void* workspace;  // SampleWorkspaceBytes(n_sample, vocab) bytes
  size_t workspace_bytes;
  int32_t* ids;  // [rows], device
};

// Workspace for `n_sample` sampled rows (0 when every row is greedy).
size_t SampleWorkspaceBytes(int64_t n_sample, int64_t vocab);
bool CanImplement(const SampleCudaParams& p);
cudaError_t Launch(const SampleCudaParams& p, cudaStream_t stream);

}  // namespace ringserve::kernels::cuda
