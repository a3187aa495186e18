#pragma once

// Causal GQA softmax attention over the bf16 KV cache ([Hkv, capacity, D]). The new K/V rows
// are stored first (bf16, rounded like the CPU), then one of two kernels runs, both reading each
// KV head once for all the query heads of its group:
// - decode (tokens x group <= 32 query rows): split-KV; each block scores a range of keys with
//   fp32 FMAs and online softmax, a combine kernel merges the ranges;
// - prefill tiles: 64 query rows x 64-key tiles on bf16 tensor cores (WMMA, fp32 accumulate),
//   online softmax in fp32. With split_bf16 the fp32 operands (Q and the probabilities) are
//   split into hi + lo bf16 halves (two MMAs each), accurate to ~2^-16; K/V are exact in bf16.
// Reference: cpu::StoreKv and cpu::SoftmaxAttentionBlock.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace ringserve::kernels::cuda {

struct SoftmaxAttentionCudaParams {
  SoftmaxAttentionParams attn;  // device pointers
  bool split_bf16 = false;
  // Set by PlanSoftmaxAttention.
  bool decode = false;
  int64_t splits = 1;
  int64_t split_keys = 0;
  float* workspace = nullptr;  // decode: [Hkv, splits, rows, D + 2] fp32
};

// Chooses the kernel and the key split for a GPU with `sm_count` SMs; returns workspace bytes.
size_t PlanSoftmaxAttention(SoftmaxAttentionCudaParams* p, int sm_count);
bool CanImplement(const SoftmaxAttentionCudaParams& p);
// Sets the kernels' shared-memory limits; call once per device before Launch.
cudaError_t InitSoftmaxAttentionKernels();
cudaError_t Launch(const SoftmaxAttentionCudaParams& p, cudaStream_t stream);

}  // namespace ringserve::kernels::cuda
